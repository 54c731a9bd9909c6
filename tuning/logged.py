"""Preference pairs from real clicks: for a DPO run "from logged feedback".

Within one item and one taste segment, a variant that was clicked more often than another becomes the chosen
answer and the other the rejected one, but only where both were shown often enough and the difference in CTR
is credible (a one-sided two-proportion z-test), so noise in a few impressions does not become a preference.
The prompt is the Studio's copy prompt for the segment's most recent viewer of either variant; the answers are
the variants' text after the headline's item name, which the Studio's writer receives as a given start.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy import stats

from generation import copy
from store import repository, serving
from tuning import prompts
from tuning.configs import MIN_IMPRESSIONS


def credible(clicks_a: int, shown_a: int, clicks_b: int, shown_b: int, confidence: float = 0.95) -> bool:
    """Whether A's CTR beats B's at `confidence` (one-sided two-proportion z-test with a pooled rate)."""
    if min(shown_a, shown_b) == 0:
        return False
    pooled = (clicks_a + clicks_b) / (shown_a + shown_b)
    spread = np.sqrt(pooled * (1 - pooled) * (1 / shown_a + 1 / shown_b))
    if spread == 0:
        return False
    return bool(clicks_a / shown_a - clicks_b / shown_b > stats.norm.ppf(confidence) * spread)


def evidence(dataset: str) -> pd.DataFrame:
    """Impressions, clicks and the most recent viewer of each creative per (item, segment), all sources."""
    shown = serving.impressions(dataset)
    if shown.empty:
        return pd.DataFrame(columns=["item_id", "segment", "title", "body", "impressions", "clicks", "viewer"])
    keys = ["item_id", "segment", "title", "body"]
    grouped = shown.groupby(keys, sort=True)
    return pd.DataFrame({"impressions": grouped.size(), "clicks": grouped["clicked"].sum(),
                         "viewer": grouped["user_id"].last()}).reset_index()


def pairs(dataset: str, min_impressions: int = MIN_IMPRESSIONS,
          confidence: float = 0.95) -> list[tuple[dict, dict]]:
    """(winner, loser) creatives of the same item and segment whose CTRs differ credibly."""
    table = evidence(dataset)
    table = table[table["impressions"] >= min_impressions]
    found = []
    for _, group in table.groupby(["item_id", "segment"], sort=True):
        for a, b in itertools.permutations(group.to_dict("records"), 2):
            if credible(a["clicks"], a["impressions"], b["clicks"], b["impressions"], confidence):
                found.append((a, b))
    return found


def no_pairs(dataset: str, min_impressions: int, skipped: int = 0) -> ValueError:
    """The error of a run from logged feedback that has nothing to learn from."""
    return ValueError(f"No credible preference pairs in the logged feedback of '{dataset}': DPO needs two variants "
                      f"of one item shown to one segment at least {min_impressions} times each whose CTRs differ "
                      f"at 95% confidence" + (f" ({skipped} such pairs have a headline that does not open with the "
                                               "item's name)" if skipped else ""))


def _answer(creative: dict, item: dict) -> str | None:
    """The creative as the writer's completion after its given start, or None when its headline does not open
    with the item's name (the writer could never have written it)."""
    start = copy.answer_start(item).removeprefix("Title: ")
    if not creative["title"].startswith(start):
        return None
    return f"{creative['title'][len(start):]}\nBody: {creative['body']}"


def preference_rows(dataset: str, tokenizer, examples: bool = True, min_impressions: int = MIN_IMPRESSIONS,
                    confidence: float = 0.95) -> tuple[list[dict], int]:
    """DPO rows {prompt, chosen, rejected} from the credible pairs, and how many pairs were left out because a
    headline does not open with the item's name."""
    catalog = repository.catalog(dataset)
    rows, skipped = [], 0
    for winner, loser in pairs(dataset, min_impressions, confidence):
        item = catalog.loc[winner["item_id"]].to_dict()
        chosen, rejected = _answer(winner, item), _answer(loser, item)
        if chosen is None or rejected is None:
            skipped += 1
            continue
        viewer = prompts.profile_for(dataset, winner["viewer"])
        angle = copy.angles(viewer, item, 1)[0]
        chat = copy.prompt_for(item, viewer, angle, examples=examples)
        rows.append({"prompt": prompts.chat_prompt(tokenizer, chat, copy.answer_start(item)),
                     "chosen": chosen, "rejected": rejected})
    return rows, skipped
