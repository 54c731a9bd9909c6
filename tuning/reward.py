"""The reward the writer is tuned on: the train audience's click probability, counted in full only for copy
the Studio would show.

A completion continues a prompt that ends in "Title: <the item's name>," (as the Studio asks the model)
and is parsed once, by `generation.copy.parse` like the Studio's own variants; the audience scores the fields
it reads. A completion the Studio could not parse keeps a tenth of its raw text's score
(`rewards.audience.MALFORMED_FACTOR`), and that is its only penalty.

Shaping (`studio_gate`): the Studio drops copy that fails its checks (does not name the item, states a
wrong year or genre, names another title, names, numbers, claims or quotes anything the catalog does not
support, repeats prompt text such as the worked example's "Viewer:" line, or uses a blocked word).
Rewarding such copy at full value would teach the policy things the product throws away, and the first pilot
saw exactly that (copies of the worked example). Rejected copy therefore keeps only `REJECTED_FACTOR` of its
click probability: still ordered by appeal, so the group baseline has signal when every sample fails, but
always below the same copy made acceptable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from generation import compose, copy, safety
from rewards import audience

REJECTED_FACTOR = 0.25


def creative_text(raw: str, item: dict, cta: str) -> str:
    """A completion as labelled text for the evaluation's tables and diversity figures: parsed and cleaned like a
    Studio variant, with the call to action code writes (`cta`), else the raw answer after the start that code
    wrote (the reward scores the parsed fields themselves, `click_reward`)."""
    start = copy.answer_start(item)
    parsed = copy.parse(raw, cta, start)
    if parsed is None:
        return start + raw
    return f"Title: {parsed['title']}\nBody: {parsed['body']}\nCTA: {parsed['cta']}"


@dataclass(frozen=True)
class Catalog:
    """What the Studio's checks compare copy with: each item's facts, every category label and title, the
    brand kit's terms."""

    items: dict[str, dict]
    categories: list[str]
    titles: list[str]
    brand: dict

    def fields(self, raw: str, item_id: str) -> dict[str, str] | None:
        item = self.items[str(item_id)]
        return copy.parse(raw, self.default_cta, copy.answer_start(item))

    @property
    def default_cta(self) -> str:
        return self.brand.get("default_cta", "Learn more")

    def creative(self, raw: str, item_id: str) -> str:
        return creative_text(raw, self.items[str(item_id)], self.default_cta)

    def accepted(self, raw: str, item_id: str) -> bool:
        """Whether the Studio would show this completion for the item (parsed, and every check passes)."""
        parsed = self.fields(raw, item_id)
        return parsed is not None and self.passes(parsed, item_id)

    def passes(self, fields: dict[str, str], item_id: str) -> bool:
        """Whether parsed copy passes every check of the Studio for the item."""
        return safety.check(fields, self.items[str(item_id)], self.categories, self.titles, self.brand).passed

    def read(self, raw: str, item_id: str) -> dict[str, str]:
        """The copy a completion states: parsed as the Studio parses it or, when it does not parse, the raw
        answer read as a title (after the item's name that code wrote)."""
        item = self.items[str(item_id)]
        return self.fields(raw, item_id) or {"title": copy.answer_start(item).removeprefix("Title: ") + raw,
                                             "body": "", "cta": ""}

    def factual(self, raw: str, item_id: str) -> bool:
        """Nothing the catalog contradicts or does not support (the Studio's fact checks) in what it states."""
        return not safety.fact_problems(self.read(raw, item_id), self.items[str(item_id)], self.categories,
                                        self.titles, self.brand)


@lru_cache(maxsize=4)
def catalog(dataset: str) -> Catalog:
    """The dataset's catalog for the checks, built once per process (the store is read-only here)."""
    from store import repository

    frame = repository.items(dataset).astype(object)
    frame = frame.where(frame.notna(), None)  # a missing year is None, not NaN, for the grounding check
    categories, titles = safety.catalog_vocabulary(dataset)
    return Catalog({str(r["item_id"]): r for r in frame.to_dict("records")}, categories, titles,
                   compose.configured_brand_kit().check_terms())


def click_reward(dataset: str, audience_name: str = "train", seed: int = 0,
                 studio_gate: bool = False) -> Callable[..., list[float]]:
    """TRL reward callable (`completions` plus the prompt dataset's `user_id` and `item_id` columns): the
    audience's click probability of each completion as the Studio parses it, for its (user, item), times
    `REJECTED_FACTOR` for parsed copy the Studio would reject when `studio_gate` is on."""
    target = audience.audience(audience_name, dataset, seed)

    def click(completions: list, user_id: list | None = None, item_id: list | None = None,
              **_columns) -> list[float]:
        if user_id is None or item_id is None:
            raise ValueError("The prompt dataset needs the columns user_id and item_id for the click reward")
        raw = [audience.completion_text(c) for c in completions]
        shown = catalog(dataset)
        fields = [shown.fields(t, i) for t, i in zip(raw, item_id, strict=True)]
        unparsed = [copy.answer_start(shown.items[str(i)]) + t for t, i in zip(raw, item_id, strict=True)]
        values = audience.score_creatives(target, fields, unparsed, user_id, item_id)
        if studio_gate:
            values = values * np.where([f is None or shown.passes(f, i) for f, i in zip(fields, item_id,
                                                                                        strict=True)],
                                       1.0, REJECTED_FACTOR)
        return values.tolist()

    click.__name__ = f"{audience_name}_click" + ("_gated" if studio_gate else "")  # TRL logs rewards/<name>/mean
    return click
