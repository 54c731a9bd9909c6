"""Prompt datasets for reward tuning: one ad-writing prompt per (user, item), from train or held-out users.

Users are split once and for all by a hash of their id (80% train, 20% held out), so the users the
policy is tuned on are never the users it is judged on, whatever the run or the machine.

Items: for each user, the items they really went on to like (rated 4+ in the simulator's held-out,
latest 20% of their history), best rated and earliest first. These are items the user is likely to
click, so the reward differences come from the copy, not from a poor item choice; the simulator's
appeal model never saw them, so tuning cannot simply memorise them.

The prompt is the Studio's own (`generation.copy.prompt_for`, first angle) with the chat template
applied and the answer started with "Title: <the item's name>," (`generation.copy.answer_start`), exactly
as `generation.writer` asks the model; each row carries that start as `prefix`, and the same prompt without
the worked examples as `short_chat` (what the best-of-N recipe tunes on, `tuning.distill`).
"""

from __future__ import annotations

import zlib

import pandas as pd

from generation import copy, profiles
from rewards import audience
from store import repository

TRAIN_SHARE = 80  # percent of users in the training split
LIKED_RATING = 4.0


def split_of(user_id: str, salt: str = "adloop-users") -> str:
    """'train' or 'held_out' for a user, stable across runs and processes (crc32, not Python's hash)."""
    return "train" if zlib.crc32(f"{salt}:{user_id}".encode()) % 100 < TRAIN_SHARE else "held_out"


def split_users(user_ids: list[str]) -> dict[str, list[str]]:
    """The users of each split, in the given order."""
    out: dict[str, list[str]] = {"train": [], "held_out": []}
    for user_id in user_ids:
        out[split_of(str(user_id))].append(str(user_id))
    return out


def liked_items(dataset: str, user_ids: list[str], per_user: int) -> dict[str, list[str]]:
    """Up to `per_user` items each user liked after the simulator's training cut (best rated, earliest first)."""
    held = audience.world(dataset).population.held_out
    liked = held[held["user_id"].isin(user_ids) & (held["rating"] >= LIKED_RATING)]
    liked = liked.sort_values(["user_id", "rating", "timestamp"], ascending=[True, False, True], kind="stable")
    return {u: g["item_id"].astype(str).head(per_user).tolist() for u, g in liked.groupby("user_id")}


def chat_prompt(tokenizer, chat: list[dict], prefix: str) -> str:
    """The text the model continues: chat template, generation prompt, then the answer's start."""
    return tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) + prefix


def profile_for(dataset: str, user_id: str) -> dict:
    """The user's profile from structured signals only (fast; no LLM), cached in the store."""
    return profiles.cached_profile(dataset, user_id, use_llm=False) or profiles.profile(dataset, user_id,
                                                                                         use_llm=False)


def prompt_rows(dataset: str, split: str = "train", users: int = 64, items_per_user: int = 1,
                offset: int = 0) -> list[dict]:
    """Rows {chat, short_chat, prefix, angle, user_id, item_id}: the first `users` users of the split (after
    `offset`) with liked items."""
    if split not in ("train", "held_out"):
        raise ValueError("split must be 'train' or 'held_out'")
    population = audience.world(dataset).population.user_ids
    members = split_users(population)[split][offset:]
    catalog = repository.items(dataset).set_index("item_id")
    rows: list[dict] = []
    for start in range(0, len(members), max(users, 1)):
        chosen = members[start:start + max(users, 1)]
        liked = liked_items(dataset, chosen, items_per_user)
        for user_id in chosen:
            if len(rows) >= users * items_per_user:
                return rows
            rows += _user_rows(dataset, user_id, liked.get(user_id, []), catalog)
    return rows[: users * items_per_user]


def _user_rows(dataset: str, user_id: str, item_ids: list[str], catalog: pd.DataFrame) -> list[dict]:
    if not item_ids:
        return []
    profile = profile_for(dataset, user_id)
    rows = []
    for item_id in item_ids:
        item = {"item_id": item_id, **catalog.loc[item_id].to_dict()}
        angle = copy.angles(profile, item, 1)[0]
        rows.append({"chat": copy.prompt_for(item, profile, angle), "prefix": copy.answer_start(item),
                     "short_chat": copy.prompt_for(item, profile, angle, examples=False),
                     "angle": angle, "user_id": user_id, "item_id": item_id})
    return rows
