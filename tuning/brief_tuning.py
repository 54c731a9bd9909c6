"""Reward tuning of the art director: prompts, a banner-level click reward and metrics for the brief writer.

The brief writer (`generation.brief_writer`) is tuned on what its choices do to a banner, not on its
wording: each completion is parsed like the Studio parses it, painted by the procedural renderer at
300x250, composed with fixed text (the item's name, a neutral line, the brand kit's default call to
action) and shown to the simulated audience, which reads the banner's mean colour, mood and text contrast
(`rewards.features`, `rewards.click_model`). Everything but the brief is held fixed per (user, item) —
the text, the render seed — so reward differences between completions are differences of art direction.
The procedural renderer reads mood, palette and composition (not the scene text), so what the reward
teaches carries over to any renderer that follows the brief.

A completion that does not parse gets `rewards.audience.MALFORMED_FACTOR` times the score of the
rule-based brief for the same (user, item): below what a valid brief typically earns, never zero, so a
group of only malformed samples still orders nothing and teaches format first.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from functools import lru_cache

import numpy as np

import settings
from generation import brief_writer, compose, designs
from generation.brief import Brief, brief_from, display_title
from generation.render import ProceduralRenderer
from rewards import audience
from store import repository
from tuning import prompts

ANSWER_PREFIX = brief_writer.ANSWER_PREFIX
NEUTRAL_BODY = "Now streaming, ready when you are."  # fixed copy: names no category, year or other title
REWARD_SIZE = (300, 250)  # the medium rectangle the Studio scores banners at


def _items(dataset: str) -> dict[str, dict]:
    """The dataset's items by id, as the Studio passes them to the brief writer."""
    return {str(k): row for k, row in repository.catalog(dataset).to_dict("index").items()}


def prompt_rows(dataset: str, split: str = "train", users: int = 64, items_per_user: int = 1,
                offset: int = 0) -> list[dict]:
    """Rows {chat, user_id, item_id}: the (user, item) pairs of `tuning.prompts.prompt_rows` (same split, same
    liked items), each with the brief writer's chat instead of the copy writer's."""
    rows = prompts.prompt_rows(dataset, split, users, items_per_user, offset)
    items = _items(dataset) if rows else {}
    return [{"chat": brief_writer.brief_chat(prompts.profile_for(dataset, r["user_id"]), items[str(r["item_id"])]),
             "user_id": r["user_id"], "item_id": r["item_id"]} for r in rows]


def render_seed(user_id: str, item_id: str, seed: int = 0) -> int:
    """The art seed of a (user, item): fixed, so two briefs for it differ only by their art direction."""
    return zlib.crc32(f"{seed}|{user_id}|{item_id}".encode())


@lru_cache(maxsize=4096)
def _banner_features(brief: Brief, title: str, kit: compose.BrandKit, art_seed: int) -> tuple:
    """(palette, mood, contrast) of the brief's 300x250 banner; cached because GRPO groups repeat briefs."""
    banner = designs.banners_for_brief(ProceduralRenderer(), brief, title, kit.default_cta, kit, art_seed,
                                       sizes=(REWARD_SIZE,))[f"{REWARD_SIZE[0]}x{REWARD_SIZE[1]}"]
    features = banner.features()
    return tuple(features["palette"]), features["mood"], features["contrast"]


def banner_features(brief: Brief, item: Mapping, kit: compose.BrandKit, art_seed: int) -> dict:
    """The `banner` fields of a creative (what the audience reads) for a brief shown for an item."""
    palette, mood, contrast = _banner_features(brief, display_title(item.get("title")), kit, art_seed)
    return {"palette": list(palette), "mood": mood, "contrast": contrast}


def _creative(brief: Brief, item: Mapping, kit: compose.BrandKit, art_seed: int) -> dict:
    """The fixed neutral copy with the brief's banner: only the banner differs between briefs of an item."""
    return {"title": display_title(item.get("title")), "body": NEUTRAL_BODY, "cta": kit.default_cta,
            "banner": banner_features(brief, item, kit, art_seed)}


def banner_reward(dataset: str, audience_name: str = "train", seed: int = 0) -> Callable[..., list[float]]:
    """TRL reward callable `f(completions, user_id, item_id, **columns)`: the audience's click probability of
    the banner each completion's brief makes for its (user, item); see the module docstring."""
    target = audience.audience(audience_name, dataset, seed)
    kit = compose.load_brand_kit(settings.load().brand_kit)
    items = _items(dataset)
    baselines: dict[tuple[str, str], float] = {}

    def score(pairs: list[tuple[str, str]], briefs: list[Brief]) -> np.ndarray:
        impressions = [audience.Impression(u, i, _creative(b, items[i], kit, render_seed(u, i, seed)))
                       for (u, i), b in zip(pairs, briefs, strict=True)]
        return target.probabilities(impressions)

    def rules_baseline(pairs: list[tuple[str, str]]) -> None:
        """Score the rule-based brief of each new (user, item) once: the malformed completions' reference."""
        new = list(dict.fromkeys(p for p in pairs if p not in baselines))
        if new:
            rules = [brief_from(prompts.profile_for(dataset, u), items[i], seed) for u, i in new]
            baselines.update(zip(new, score(new, rules).tolist(), strict=True))

    def banner_click(completions: list, user_id: list, item_id: list, **_columns) -> list[float]:
        pairs = [(str(u), str(i)) for u, i in zip(user_id, item_id, strict=True)]
        briefs = [brief_writer.parse_answer(audience.completion_text(c), items[i])
                  for c, (_, i) in zip(completions, pairs, strict=True)]
        values = np.zeros(len(pairs))
        valid = [n for n, b in enumerate(briefs) if b is not None]
        if valid:
            values[valid] = score([pairs[n] for n in valid], [briefs[n] for n in valid])
        rules_baseline([p for p, b in zip(pairs, briefs, strict=True) if b is None])
        for n, b in enumerate(briefs):
            if b is None:
                values[n] = audience.MALFORMED_FACTOR * baselines[pairs[n]]
        return values.tolist()

    banner_click.__name__ = f"{audience_name}_banner_click"  # TRL logs rewards/<name>/mean
    return banner_click


def metrics(raw: list[str], rows: list[dict], dataset: str) -> dict:
    """What a brief writer's answers look like, for the evaluation table: how many parse, how varied the
    parsed briefs are (distinct moods and palettes; a collapsed writer repeats one) and the mean text
    contrast of their banners (None when nothing parsed)."""
    items = _items(dataset)
    kit = compose.load_brand_kit(settings.load().brand_kit)
    valid = []
    for text, row in zip(raw, rows, strict=True):
        user_id, item_id = str(row["user_id"]), str(row["item_id"])
        if (brief := brief_writer.parse_answer(text, items[item_id])) is not None:
            valid.append((brief, banner_features(brief, items[item_id], kit, render_seed(user_id, item_id))))
    contrast = [features["contrast"] for _, features in valid]
    return {"parse_rate": round(len(valid) / len(raw), 4) if raw else 0.0,
            "distinct_moods": len({b.mood for b, _ in valid}),
            "distinct_palettes": len({b.palette for b, _ in valid}),
            "mean_contrast": round(float(np.mean(contrast)), 3) if contrast else None}
