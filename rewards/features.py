"""Creative features: what the simulated audience reads off an ad, computed once per distinct creative.

A creative is a dict with `title`, `body`, `cta` and an optional `banner` dict (`palette`: mean
colour as RGB 0-255, `mood`: one word, `contrast`: text contrast ratio 1-21, as WCAG defines it).
Everything an audience needs from the text is extracted here in one pass per distinct creative, so
scoring a batch of impressions is array gathers afterwards. Facts are checked against the catalog
row by the Studio's own check (`generation.safety.fact_check`), never against the creative's own
claims: a year, title or category the item does not have is a contradiction, whatever the copy says.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from generation import category_claims, copy, english, grounding, intent, safety, titles
from generation.brief import MOODS

CTA_VERBS = {"watch", "stream", "see", "rent", "buy", "book", "get", "start", "play", "discover", "try", "join",
             "add", "order", "shop", "grab", "catch", "explore", "download", "save", "find", "meet", "enjoy"}
CLICKBAIT = re.compile(
    r"you won'?t believe|shocking|click here|act now|limited time|what happens next|doctors hate|jaw[- ]dropping|"
    r"mind[- ]blowing|must[- ]see|secret|insane|unbelievable|before it'?s (?:gone|too late)|this one trick|"
    r"will blow your mind|100%|guaranteed|free!|omg|epic fail|you need to see", re.IGNORECASE)
ENERGETIC = {"thrilling", "explosive", "epic", "heart-pounding", "action-packed", "adrenaline", "fast", "wild",
             "intense", "unstoppable", "electrifying", "fierce", "daring", "furious", "relentless", "spectacular",
             "breathless", "gripping", "bold", "pulse-pounding", "blast"}
CALM = {"gentle", "quiet", "moving", "tender", "thoughtful", "touching", "heartfelt", "timeless", "classic",
        "subtle", "poignant", "reflective", "graceful", "elegant", "charming", "delicate", "warm", "lyrical"}
STOPWORDS = english.FUNCTION_WORDS | {"now", "one", "more"}
GENERIC = {"movie", "movies", "film", "films", "best", "top", "great"}  # words that stuffing pads with
WORD = re.compile(r"[A-Za-z][A-Za-z'-]*|\d+")


def display_title(title: str) -> str:
    """How copy names an item: 'Usual Suspects, The (1995)' reads 'The Usual Suspects' (the Studio's own name)."""
    return copy.display_name(title)


@dataclass
class Catalog:
    """The item facts the audience checks copy against, plus each item's embedding."""

    item_ids: list[str]
    index: dict[str, int]
    titles: list[str]
    names: list[list[str]]  # lower-case names each item goes by (`grounding.names_of`)
    years: list[set[int]]  # years a creative may truthfully name (release date and title year)
    categories: list[str]
    category_text: list[str | None]  # the catalog's own "A|B" category field of each item
    genres: np.ndarray  # items x categories, bool
    vectors: np.ndarray  # items x d, unit rows
    rows: list[dict]  # each item's catalog row, as the Studio's checks read it
    display_names: list[str]  # every item's display name, for spotting another item's name
    facts: list[grounding.Facts]  # what copy about each item may state (the Studio's grounding check)

    @classmethod
    def build(cls, items: pd.DataFrame, vectors: Mapping[str, np.ndarray], brand: Mapping | None = None) -> Catalog:
        """`brand`: the brand kit's terms (`BrandKit.check_terms`), which copy may state as the Studio allows."""
        ids = items["item_id"].astype(str).tolist()
        cats = items["category"].map(intent.categories_of).tolist()
        labels, display_names = safety.vocabulary(items)
        genres = np.array([[label in cs for label in labels] for cs in cats], dtype=bool).reshape(len(ids),
                                                                                                  len(labels))
        names = [[n.lower() for n in grounding.names_of(t)] for t in items["title"]]
        years = [{int(y) for y in (year, titles.year_of(t)) if y is not None and not pd.isna(y)}
                 for year, t in zip(items["year"], items["title"], strict=True)]
        category_text = items["category"].where(items["category"].notna(), None).tolist()
        rows = items.astype(object).where(items.notna(), None).to_dict("records")
        return cls(ids, {i: n for n, i in enumerate(ids)}, items["title"].astype(str).tolist(), names, years,
                   labels, category_text, genres, np.stack([vectors[i] for i in ids]).astype(np.float32),
                   rows, display_names, [grounding.facts_for(row, brand) for row in rows])

    def item_categories(self, item: int) -> list[str]:
        return [self.categories[g] for g in np.flatnonzero(self.genres[item])]


@dataclass
class CreativeFeatures:
    """Per distinct creative: numeric features (arrays) and the facts it states (for the catalog check)."""

    texts: list[str]  # what is embedded: title and body
    fields: list[dict[str, str]]  # title, body and CTA as written, for the Studio's fact check
    evidence: list[list[str]]  # the titles each may name as its user's own liked item (its hook), none when absent
    numeric: dict[str, np.ndarray]
    mentions: np.ndarray  # creatives x categories, bool: categories the copy claims (`category_claims`)
    palette: np.ndarray  # creatives x 3, NaN without a banner
    mood: np.ndarray  # index into MOODS, -1 when absent or unknown
    contrast: np.ndarray  # NaN without a banner


def _field(creative: Mapping, key: str) -> str:
    value = creative.get(key) if isinstance(creative, Mapping) else None
    return str(value).strip() if value is not None else ""


def creative_text(creative: Mapping) -> str:
    """The text that the semantic match embeds: headline and body (the CTA is scored on its own)."""
    return ". ".join(p for p in (_field(creative, "title"), _field(creative, "body")) if p)


def _syllables(word: str) -> int:
    return max(1, len(re.findall(r"[aeiouy]+", word.lower().rstrip("e"))))


def readability(words: list[str], text: str) -> float:
    """Flesch reading ease scaled to 0-1: short sentences of short words read fastest in an ad slot."""
    if not words:
        return 0.0
    sentences = max(1, len(re.findall(r"[.!?]+(?:\s|$)", text)))
    ease = 206.835 - 1.015 * len(words) / sentences - 84.6 * sum(map(_syllables, words)) / len(words)
    return float(np.clip(ease, 0, 100) / 100)


def _lexical(words: list[str], category_tokens: int) -> dict[str, float]:
    """Stuffing and repetition: how much of the copy is category names, padding and repeated words."""
    lower = [w.lower() for w in words]
    content = [w for w in lower if w not in STOPWORDS and not w.isdigit()]
    counts = Counter(content)
    repeats = sum(max(0, n - 2) for n in counts.values())  # a name in both headline and body is no spam
    padding = sum(w in GENERIC for w in lower)
    share = (category_tokens + padding) / max(len(lower), 1)
    return {"stuffing": float(np.clip((share - 0.2) / 0.35, 0, 1.5)),
            "repetition": float(np.clip((repeats / max(len(content), 1) - 0.05) / 0.3, 0, 1.5))}


def _shouting(text: str) -> float:
    """Capitals and exclamation marks beyond the one a lively ad may use."""
    letters = [c for c in text if c.isalpha()]
    caps = sum(c.isupper() for c in letters) / max(len(letters), 1)
    bangs = text.count("!")
    return float(np.clip((caps - 0.25) / 0.5, 0, 1) + np.clip((bangs - 1) * 0.25, 0, 0.75))


def _energy(words: list[str], text: str) -> float:
    """Tone from 0 (calm, reflective words) to 1 (energetic words, exclamation): matched to each user's taste."""
    lower = {w.lower() for w in words}
    score = 0.5 + 0.2 * (len(lower & ENERGETIC) - len(lower & CALM)) + 0.1 * min(text.count("!"), 2)
    return float(np.clip(score, 0, 1))


def _cta(cta: str) -> float:
    """1 for an action verb ('Watch now'), 0.5 for any other closing line, 0 for none."""
    if not cta:
        return 0.0
    return 1.0 if {w.lower() for w in WORD.findall(cta)} & CTA_VERBS else 0.5


def _text_facts(creative: Mapping, catalog: Catalog) -> tuple[dict[str, float], np.ndarray]:
    """Every numeric text feature of one creative, and the categories it claims."""
    full = " ".join(p for p in (_field(creative, "title"), _field(creative, "body"), _field(creative, "cta")) if p)
    shown = creative_text(creative)
    hits = category_claims.counts(full, catalog.categories)
    words = WORD.findall(shown)
    numeric = {"words": float(len(words)), "readability": readability(words, shown), "cta": _cta(
        _field(creative, "cta")), "shouting": _shouting(full), "clickbait": float(len(CLICKBAIT.findall(full))),
        "energy": _energy(words, full), **_lexical(WORD.findall(full), sum(hits))}
    return numeric, np.array(hits, dtype=bool)


def _banner(creative: Mapping) -> tuple[np.ndarray, int, float]:
    banner = creative.get("banner") if isinstance(creative, Mapping) else None
    if not isinstance(banner, Mapping):
        return np.full(3, np.nan), -1, np.nan
    palette = np.asarray(banner.get("palette", (np.nan,) * 3), dtype=float).reshape(-1)[:3]
    mood = str(banner.get("mood", "")).strip().lower()
    contrast = banner.get("contrast")
    return (np.clip(palette, 0, 255) if palette.size == 3 else np.full(3, np.nan),
            MOODS.index(mood) if mood in MOODS else -1, float(contrast) if contrast is not None else np.nan)


def hook_evidence(creative: Mapping) -> list[str]:
    """The title of the liked item a Studio variant's headline names for its user (`taste.hooks`), which the
    Studio's check accepted as that user's evidence; copy from anywhere else has none."""
    hook = creative.get("hook") if isinstance(creative, Mapping) else None
    return [str(hook["title"])] if isinstance(hook, Mapping) and hook.get("title") else []


def creative_features(creatives: Sequence[Mapping], catalog: Catalog) -> CreativeFeatures:
    """Features of distinct creatives (deduplicate before calling: this is the per-creative Python pass)."""
    rows = [_text_facts(c, catalog) for c in creatives]
    banners = [_banner(c) for c in creatives]
    keys = rows[0][0].keys() if rows else []
    return CreativeFeatures(
        texts=[creative_text(c) for c in creatives],
        fields=[{k: _field(c, k) for k in grounding.FIELDS} for c in creatives],
        evidence=[hook_evidence(c) for c in creatives],
        numeric={k: np.array([r[0][k] for r in rows], dtype=np.float32) for k in keys},
        mentions=np.array([r[1] for r in rows], dtype=bool).reshape(len(rows), len(catalog.categories)),
        palette=np.array([b[0] for b in banners], dtype=np.float32).reshape(len(rows), 3),
        mood=np.array([b[1] for b in banners], dtype=np.int64),
        contrast=np.array([b[2] for b in banners], dtype=np.float32))


def contradictions(features: CreativeFeatures, catalog: Catalog, creative: int, item: int) -> tuple[float, ...]:
    """(own title named, another item named, wrong year, wrong category, ungrounded) of one creative shown for
    one item, read by the Studio's own check (`safety.fact_check`), so no audience pays for copy the Studio
    rejects and none penalises copy it passes. A wrong year is counted once, as wrong_year, though the
    grounding check reports it among its reasons."""
    fields = features.fields[creative]
    found = safety.fact_check(fields, catalog.rows[item], catalog.categories, catalog.display_names,
                              catalog.facts[item], features.evidence[creative])
    named_own = safety.names_item(" ".join(fields.values()), catalog.titles[item])
    wrong_year = any(r.startswith("says ") for r in found.unsupported)
    ungrounded = any(not r.startswith("says ") for r in found.unsupported)
    return (float(named_own), float(found.other_item is not None), float(wrong_year), float(bool(found.categories)),
            float(ungrounded))


def pair_checks(features: CreativeFeatures, catalog: Catalog, creatives: np.ndarray,
                items: np.ndarray) -> np.ndarray:
    """Catalog checks for every impression, computed once per distinct (creative, item) pair: n x 5."""
    pairs, inverse = np.unique(np.stack([creatives, items], axis=1), axis=0, return_inverse=True)
    checks = np.array([contradictions(features, catalog, c, i) for c, i in pairs], dtype=np.float32)
    return checks.reshape(len(pairs), 5)[inverse.reshape(-1)]
