"""Grounding: every name, number, claim and quotation in a variant must be supported by what we know.

What we know about an item (`Facts`): its catalog row (title, year, categories with their aliases, a
description where the dataset has one) and the brand kit. A variant may state only that. The check reads
each field (title, body, CTA) for four kinds of statement and names every one that has no support:

- names: a run of capitalised words ("The Force Awakens", "Harrison Ford") or one capitalised word inside
  a sentence. Every word of a run must be a fact word; a capitalised word that only opens a sentence (or
  the hook after a headline's colon) may also be one of the common words in `common_words.txt`.
- numbers: any token with a digit (years, "#1", "$9.99", "10/10", "4 stars") must occur in the facts.
- claims: superlatives, rankings and awards ("best", "number one", "Oscar-winning") unless the facts say so.
- quotations: a phrase in quotes must occur in the facts word for word.

The same function serves the Studio's checks (`generation.safety`), the tuning reward's gate, the
evaluation's factuality metric and both simulated audiences, so nothing that the Studio rejects is paid
for anywhere.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from generation.intent import aliases, categories_of

FIELDS = ("title", "body", "cta")
CONNECTORS = {"of", "the", "and", "a", "an", "in", "on", "at", "to", "for", "de", "la", "le", "du", "von", "van",
              "&"}
CLAIMS = re.compile(
    r"(?<![\w-])(?:best(?:[- ]selling|[- ]seller)?|greatest|finest|top[- ]rated|highest[- ]rated|number one|no\. ?1|"
    r"all[- ]time|of all time|ever made|award[- ]winning|awards?|oscars?|academy awards?|emmys?|golden globes?|"
    r"nominated|nominee|critically acclaimed|acclaimed|record[- ]breaking|blockbuster|most popular|bestsellers?)"
    r"(?![\w-])", re.IGNORECASE)
TOKEN = re.compile(r"[^\W\d_][\w'’-]*|[#$€£]?\d[\d.,:/%]*\w*|[.!?:;—–]|\s[-–]\s")
QUOTED = re.compile(r"[\"“”]([^\"“”]{2,80})[\"“”]|(?<![\w])['‘]([^'‘’]{2,80})['’](?![\w])")
SENTENCE_END = {".", "!", "?", ":", ";", "—", "–"}
YEAR = re.compile(r"^(1[89]\d\d|20\d\d)$")


@lru_cache(maxsize=1)
def common_words() -> frozenset[str]:
    """The short list of words that may open a sentence without being a name."""
    lines = (Path(__file__).with_name("common_words.txt")).read_text(encoding="utf-8").splitlines()
    return frozenset(w.strip().lower() for w in lines if w.strip() and not w.startswith("#"))


def _words(text: str) -> list[str]:
    return [w.lower().replace("’", "'") for w in re.findall(r"[^\W_][\w'’-]*", text)]


def _forms(word: str) -> set[str]:
    """A word and the forms copy may bend it into: plural, possessive, hyphen parts."""
    forms = {word, word.removesuffix("'s"), word.removesuffix("s"), word.removesuffix("es")}
    forms |= set(word.split("-"))
    return {f for f in forms if f}


@dataclass(frozen=True)
class Facts:
    """What copy about one item may state: the words, numbers and text of its catalog row and the brand kit."""

    words: frozenset[str]
    numbers: frozenset[str]
    text: str  # lower-case facts with single spaces, for quoted phrases and multi-word claims
    year: int | None

    def supports(self, word: str) -> bool:
        return bool(_forms(word.lower().replace("’", "'")) & self.words)


def facts_for(item: Mapping, brand_kit: Mapping | None = None) -> Facts:
    """The facts of one catalog row (title, year, categories, description) and of the brand kit."""
    kit = brand_kit or {}
    categories = categories_of(item.get("category"))
    parts = [str(item.get("title") or ""), str(item.get("description") or ""), " ".join(categories),
             " ".join(a for c in categories for a in aliases(c)), str(kit.get("name") or ""),
             str(kit.get("default_cta") or ""), str(kit.get("required_disclaimer") or "")]
    year = item.get("year")
    year = int(year) if year is not None and str(year).strip() not in ("", "nan", "None") else None
    if year:
        parts.append(str(year))
    text = " ".join(" ".join(parts).lower().split())
    words = {f for w in _words(text) for f in _forms(w)}
    numbers = set(re.findall(r"\d+", text))
    return Facts(frozenset(words), frozenset(numbers), text, year)


def _number_problem(token: str, facts: Facts) -> str | None:
    digits = re.findall(r"\d+", token)
    if all(d in facts.numbers for d in digits) and not re.search(r"[#$€£%]", token):
        return None
    if YEAR.match(token):
        return f"says {token}, but the item is from {facts.year or 'an unknown year'}"
    return f"states '{token}', which the catalog does not support"


def _names(tokens: list[str], facts: Facts, field: str) -> list[str]:
    """Runs of capitalised words that the facts do not support (see the module's rules)."""
    common, found, run = common_words(), [], []
    opens = sentence_start = True

    def close() -> None:
        while run and run[0].lower() in CONNECTORS:
            run.pop(0)
        while run and run[-1].lower() in CONNECTORS:
            run.pop()
        content = [w for w in run if w.lower() not in CONNECTORS]
        # a sentence may open with a common word, alone ("The adventure begins") or before a supported
        # name ("Watch Star Wars"); "A New Hope" and "The Force Awakens" stay names
        if opens and content and content[0].lower() in common and (len(content) == 1 or facts.supports(content[1])):
            del run[: run.index(content.pop(0)) + 1]
        lone_cta = field == "cta" and all(w.lower() in common for w in content)
        if content and not lone_cta and not all(facts.supports(w) for w in content):
            found.append(" ".join(run).strip())
        run.clear()

    for token in tokens:
        word = token.strip()
        if word[:1].isalpha() and word[:1].isupper() and word.lower() != "i":
            if not run:
                opens = sentence_start
            run.append(word)
        elif run and word.lower() in CONNECTORS:
            run.append(word)
        else:
            if run:
                close()
        sentence_start = word in SENTENCE_END or (token.strip() in ("-", "–") and token != word)
    if run:
        close()
    return found


def problems(copy: Mapping[str, str], facts: Facts) -> list[str]:
    """Every statement in the variant's fields that the facts do not support, each named in its reason."""
    reasons: list[str] = []
    for field in FIELDS:
        text = str(copy.get(field) or "")
        tokens = TOKEN.findall(text)
        for name in _names(tokens, facts, field):
            reasons.append(f"names '{name}', which the catalog does not support")
        for token in tokens:
            if any(c.isdigit() for c in token) and (problem := _number_problem(token.strip(".,:;!?"), facts)):
                reasons.append(problem)
        for claim in CLAIMS.findall(text):
            if " ".join(claim.lower().split()) not in facts.text:
                reasons.append(f"claims '{claim}', which the catalog does not support")
        for pair in QUOTED.findall(text):
            phrase = " ".join((pair[0] or pair[1]).lower().split())
            if phrase not in facts.text:
                reasons.append(f"quotes '{phrase}', which the catalog does not support")
    return list(dict.fromkeys(reasons))


def grounded(copy: Mapping[str, str], facts: Facts) -> bool:
    return not problems(copy, facts)


def facts_table(items: Iterable[Mapping], brand_kit: Mapping | None = None) -> dict[str, Facts]:
    """Facts of many catalog rows by item id."""
    return {str(item["item_id"]): facts_for(item, brand_kit) for item in items}
