"""What a run tunes: the ad-copy writer or the art-direction (brief) writer.

Both are the same LLM asked different things, so the trainers, the live held-out judge and the
evaluation are shared. A target supplies only its prompts (the same train/held-out split and the same
(user, item) pairs), the text its answers are started with, its reward (copy: the click probability of
the parsed ad, optionally gated by the Studio's checks; brief: the click probability of the banner the
brief produces) and the extra metrics a person needs to spot reward hacking in its outputs.
"""

from __future__ import annotations

from collections.abc import Callable

from datasets import Dataset

from generation import copy, safety, writer
from tuning import prompts
from tuning.configs import TARGETS
from tuning.sampling import Rules


def _require(target: str) -> None:
    if target not in TARGETS:
        raise ValueError(f"Unknown target '{target}' (choose from {', '.join(TARGETS)})")


def rows(target: str, dataset: str, split: str, users: int, items_per_user: int = 1) -> list[dict]:
    """Prompt rows {chat, user_id, item_id, ...} of the split's first `users` users."""
    _require(target)
    if target == "brief":
        from tuning import brief_tuning

        return brief_tuning.prompt_rows(dataset, split, users, items_per_user)
    return prompts.prompt_rows(dataset, split, users, items_per_user)


def answer_prefix(target: str, row: dict) -> str:
    """The start of the row's answer, written into the prompt so the model continues the format: the brief's
    first label, or the copy's headline with the item's name (`generation.copy.answer_start`)."""
    _require(target)
    if target == "brief":
        from tuning import brief_tuning

        return brief_tuning.ANSWER_PREFIX
    return row["prefix"]


def rules(target: str, dataset: str, chosen: list[dict]) -> Rules:
    """How the Studio draws the target's answers for these rows: copy with its writer's rules (no word its
    checks would reject about the row's item, no loop, two lines: title and body, code writes the call to
    action); the brief as its writer draws it, unbounded."""
    _require(target)
    if target == "brief":
        return Rules()
    from tuning.reward import catalog

    shown = catalog(dataset)
    items = [shown.items[str(r["item_id"])] for r in chosen]
    return Rules([safety.words_to_avoid(item, shown.categories, shown.brand) for item in items], writer.NO_REPEAT,
                 copy.ANSWER_LINES, [safety.numbers_to_allow(item, shown.brand) for item in items])


def texts(target: str, tokenizer, chosen: list[dict], examples: bool = True) -> list[str]:
    """The templated prompt text of each row, ending in its answer's start; without the copy prompt's worked
    examples when `examples` is False (the brief's prompt has none to leave out)."""
    chat = "chat" if examples or target == "brief" else "short_chat"
    return [prompts.chat_prompt(tokenizer, r[chat], answer_prefix(target, r)) for r in chosen]


def reward(target: str, dataset: str, audience_name: str = "train", seed: int = 0,
           studio_gate: bool = False) -> Callable[..., list[float]]:
    """The TRL-style reward callable of the target, scored by the named audience."""
    _require(target)
    if target == "brief":
        from tuning import brief_tuning

        return brief_tuning.banner_reward(dataset, audience_name, seed)
    from tuning.reward import click_reward

    return click_reward(dataset, audience_name, seed, studio_gate=studio_gate)


def prompt_dataset(target: str, dataset: str, tokenizer, split: str = "train", users: int = 64,
                   items_per_user: int = 1) -> Dataset:
    """A `datasets.Dataset` with `prompt`, `user_id` and `item_id` (TRL passes the ids to the reward)."""
    chosen = rows(target, dataset, split, users, items_per_user)
    if not chosen:
        raise ValueError(f"No {split} users with liked held-out items in dataset '{dataset}'")
    return Dataset.from_list([{"prompt": text, "user_id": r["user_id"], "item_id": r["item_id"]}
                              for text, r in zip(texts(target, tokenizer, chosen), chosen, strict=True)])
