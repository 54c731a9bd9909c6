"""Checks every variant must pass before it is shown as fine: catalog grounding (`generation.grounding`),
categories (`generation.category_claims`), other items' names, brand kit, blocklist, no phrase said twice.

A variant that fails carries its reasons; the Studio regenerates it or shows it as rejected, never
silently as fine.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import pandas as pd

from generation import category_claims, compose, grounding, story_claims
from generation.copy import display_name
from generation.english import FUNCTION_WORDS, is_word
from generation.intent import categories_of
from store import repository
from untrusted import findings

# Claims an ad must not make and words it must not use, whatever the brand.
BLOCKLIST = [
    "guaranteed", "guarantee", "risk-free", "free money", "miracle", "cure", "100%", "act now or",
    "click here", "xxx", "porn", "nude", "kill yourself", "nazi", "racist", "slut", "whore", "retard",
    "fuck", "shit", "bitch", "cunt",
]
# Signs that the model repeated its instructions or followed an injected one.
# a run of this many words said twice in one field reads as a stuck model, not as copy; three-word parallels
# ("a moment of solitude, and a moment of sanity") are writing (the engines keep token runs from looping)
REPEAT_WORDS = 4
GIBBERISH_WORDS = 2  # words that are no English word before a field reads as noise (`gibberish_problems`)
BODY_WORDS = 3  # a body says at least this many words, one of them "a", "the", "of"... (`gibberish_problems`)
LEAKS = re.compile(r"<\|[^|]*\|>|</?data>|system prompt|ignore (all |any |the )?(previous|above)|instructions?\b|"
                   r"\bviewer:|\bangle:|\bitem:|https?://|www\.", re.IGNORECASE)


@dataclass
class Verdict:
    passed: bool
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"status": "passed" if self.passed else "rejected", "reasons": self.reasons}


def _mentions(text: str, phrase: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(phrase.lower())}(?![\w-])", text.lower()) is not None


def vocabulary(items: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Every category label and every item's display name of a catalog: what `fact_check` compares
    copy to."""
    labels = sorted({c for value in items["category"].dropna() for c in categories_of(value)})
    return labels, sorted({display_name(t) for t in items["title"]})


def catalog_vocabulary(dataset: str) -> tuple[list[str], list[str]]:
    """`vocabulary` of a stored dataset."""
    return vocabulary(repository.items(dataset))


def categories_not_listed(item: Mapping, categories: list[str]) -> list[str]:
    """The catalog's categories this item lacks."""
    own = {c.lower() for c in categories_of(item.get("category"))}
    return [label for label in categories if label.lower() not in own]


def _other_item(text: str, item: Mapping, other_titles: list[str]) -> str | None:
    """The first other item the copy names, as its name is written (capitals included: "at the edge of
    reality" does not name "The Edge"); names of eight letters or more, which are no everyday phrase."""
    own_title, own_name = str(item["title"]).lower(), display_name(str(item["title"])).lower()
    for title in other_titles:  # the substring test first: a regex per catalog title took seconds per request
        name = title.lower()
        if len(title) >= 8 and title in text and name not in own_title and name != own_name and re.search(
                rf"(?<![\w-]){re.escape(title)}(?![\w-])", text):
            return title
    return None


class FactCheck(NamedTuple):
    """What the copy gets wrong or cannot support about the item, by kind: the audiences weigh the kinds,
    the Studio lists them all as reasons."""

    categories: list[str]  # catalog categories the copy claims (`category_claims`) that the item lacks
    other_item: str | None  # another item the copy names
    unsupported: list[str]  # the grounding check's reasons (`grounding.problems`)

    def reasons(self) -> list[str]:
        found = [f"calls it {label}, which the catalog does not list for this item" for label in self.categories]
        return found + ([f"names another item ('{self.other_item}')"] if self.other_item else []) + self.unsupported


def fact_check(copy: Mapping[str, str], item: Mapping, categories: list[str], other_titles: list[str],
               facts: grounding.Facts, evidence: Sequence[str] = ()) -> FactCheck:
    """Everything the copy says about the item that the catalog contradicts or does not support: the one
    factuality check of the Studio, the tuning reward's gate, the evaluation and both audiences. The item's
    own names are blanked before categories are read ("Kids" the film claims no Children's). `evidence`: titles
    of the user's own liked items the headline may name (a variant's hook, `taste.hooks`); their names, as
    written with their capitals, are blanked there before anything is read. The body and call to action may
    name no other item, the hook's included: the body is about the item, and small models told of the hook
    there as if it were the item ("A classic Jerry Maguire comedy" for Vegas Vacation)."""
    hooks = [n for t in evidence for n in grounding.names_of(t)]
    copy = {k: _blank_as_written(str(copy.get(k) or ""), hooks if k == "title" else []) for k in grounding.FIELDS}
    text = " ".join(copy.values())
    unnamed = text
    for name in grounding.names_of(str(item["title"])):
        unnamed = re.sub(rf"(?<![\w-]){re.escape(name)}(?![\w-])", grounding.BLANK, unnamed, flags=re.IGNORECASE)
    return FactCheck(category_claims.claimed(unnamed, categories_not_listed(item, categories)),
                     _other_item(text, item, other_titles) or _hook_below(copy, hooks, item),
                     grounding.problems(copy, facts))


def _hook_below(copy: Mapping[str, str], hooks: list[str], item: Mapping) -> str | None:
    """A hook's name in the body or call to action in any case ("A romantic 1996 drama, for fans of courage
    under fire" for Up Close and Personal): the hook is an item the user rated, so, unlike other titles, a
    lower-case spelling is still its name."""
    for name in _names_in_any_case(item, hooks):
        if any(re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", copy[k], re.IGNORECASE) for k in ("body", "cta")):
            return name
    return None


def _names_in_any_case(item: Mapping, hooks: list[str]) -> list[str]:
    """The hook names a body may not say in any case: eight letters or more (as for other items' names), and
    not within the item's own name."""
    own = display_name(str(item["title"])).lower()
    return [name for name in hooks if len(name) >= 8 and name.lower() not in own]


def _blank_as_written(text: str, names: list[str]) -> str:
    """`text` with each name, as written (capitals included: the title, not an everyday phrase), blanked."""
    for name in sorted(names, key=len, reverse=True):
        text = re.sub(rf"(?<![\w-]){re.escape(name)}(?![\w-])", f" {grounding.BLANK} ", text)
    return text


def fact_problems(copy: dict[str, str], item: dict, categories: list[str], other_titles: list[str],
                  brand_kit: dict, evidence: Sequence[str] = ()) -> list[str]:
    """`fact_check`'s reasons, the item's facts read with the brand kit."""
    return fact_check(copy, item, categories, other_titles, grounding.facts_for(item, brand_kit),
                      evidence).reasons()


def words_to_avoid(item: dict, categories: list[str], brand_kit: dict) -> list[str]:
    """Words the checks would reject in copy about this item, which the writer keeps the model from writing
    at all (construction before filtering): unsupported claim words, story words and words that claim a
    category the item lacks, the blocklist's and the brand kit's banned single words."""
    banned = [w for w in (*BLOCKLIST, *brand_kit.get("banned_words", [])) if w and w.isalpha()]
    facts = grounding.facts_for(item, brand_kit)
    claims = grounding.claim_words_to_avoid(facts) + story_claims.words_to_avoid(facts.story)
    words = claims + category_claims.words(categories_not_listed(item, categories)) + banned
    return list(dict.fromkeys(w.lower() for w in words))  # lower case: in every case (a capital marks a name)


def hook_words(item: dict, hook_title: str) -> list[str]:
    """The words of a hook's names, with their capitals, that the item's own names lack, and its names in lower
    case as phrases: a hook slot's body may not name the hook (`fact_check`), so the writer keeps the model from
    starting its name there ("Jerry" of Jerry Maguire, but not "Star" of Star Trek: First Contact for Star Trek:
    Generations) or finishing it in lower case ("for fans of a grand day out")."""
    own = {w.lower() for name in grounding.names_of(str(item.get("title") or "")) for w in name.split()}
    names = grounding.names_of(hook_title)
    words = [w.strip(":,.!?'’") for name in names for w in name.split()]
    return list(dict.fromkeys([*(w for w in words if w[:1].isupper() and w.isalpha() and w.lower() not in own
                                 and w.lower() not in grounding.CONNECTORS),
                               *(name.lower() for name in _names_in_any_case(item, names))]))


def numbers_to_allow(item: dict, brand_kit: dict) -> frozenset[str]:
    """The only numbers the writer lets the model write about this item (`engine.Numbers`): those the checks
    accept (its year, the digits of its description and the brand kit) and the digits of its own names
    ("Apollo 13"), which the checks blank with the name; not a name's digits that read as a year, which the
    model wrote alone ("a great 2001" of 2001: A Space Odyssey) and the check rightly reads as one."""
    names = grounding.names_of(str(item.get("title") or ""))
    return grounding.facts_for(item, brand_kit).numbers | {n for name in names for n in re.findall(r"\d+", name)
                                                           if not grounding.YEAR.match(n)}


def names_item(text: str, title: str) -> bool:
    """Whether the copy names the item by one of the names it goes by (`grounding.names_of`)."""
    return any(_mentions(text, name) for name in grounding.names_of(title))


def brand_problems(text: str, brand_kit: dict) -> list[str]:
    banned = [w for w in brand_kit.get("banned_words", []) if w and _mentions(text, w)]
    return [f"uses the banned word '{w}'" for w in banned]


def blocklist_problems(text: str) -> list[str]:
    hits = [w for w in BLOCKLIST if _mentions(text, w)]
    problems = [f"uses the blocked phrase '{w}'" for w in hits]
    if LEAKS.search(text):
        problems.append("repeats prompt text or markup (possible prompt injection)")
    if found := findings(text):  # what an injected request asks for: links, personal data, speaker labels
        problems.append(f"contains {', '.join(found)} (possible prompt injection)")
    return problems


def _script(char: str) -> str:
    """The writing system of a letter, as Unicode names it ("LATIN", "CYRILLIC", "GREEK", "CJK")."""
    return unicodedata.name(char, "UNKNOWN").split()[0]


def script_problems(text: str) -> list[str]:
    """Text a banner cannot print, or that mixes writing systems ("Stаr Wars" with a Cyrillic 'а' looks like the
    title but is not it): characters the banner font lacks, U+FFFD, and letters of more than one script."""
    problems = []
    if missing := compose.unprintable(text):
        problems.append(f"uses characters the banner font cannot print ({', '.join(map(repr, missing))})")
    scripts = {}
    for char in text:
        if unicodedata.category(char).startswith("L"):
            scripts.setdefault(_script(char), []).append(char)
    if len(scripts) > 1:
        main = max(scripts, key=lambda k: len(scripts[k]))
        odd = "".join(dict.fromkeys(c for k, chars in scripts.items() if k != main for c in chars))
        problems.append(f"mixes writing systems ({main.lower()} text with '{odd}')")
    return problems


def gibberish_problems(copy: dict[str, str]) -> list[str]:
    """Copy that does not read as words, which a broken or random model writes and which names, claims and
    tells nothing, so no other check rejects it:
    - a title or body with at least `GIBBERISH_WORDS` lower-case words, and more than half of them, that are no
      English word ("amphib modifyingplays underlyingjingffect..."); capitalised words are the names check's;
    - a body of fewer than `BODY_WORDS` words ("While", "intentions"), or with that many lower-case words and no
      function word ("imbalances financed legislatures ?"); names may stand alone ("Star Wars' heroes return.").
    Of 10,368 bench bodies, 36 are flagged, all broken ("A great", "Classic 1996 classic romantic romance.").
    The price: a hand-written fragment ("Pure sci-fi suspense tonight.") is refused too."""
    problems = []
    for name in ("title", "body"):
        words = [w for w in re.findall(r"(?<![\w'’-])[a-z]+(?![\w'’])", copy.get(name, "")) if len(w) >= 3]
        odd = [w for w in words if not is_word(w)]
        if len(odd) >= GIBBERISH_WORDS and len(odd) * 2 > len(words):
            problems.append(f"{name} does not read as words ({', '.join(map(repr, odd[:3]))}...)")
    words = re.findall(r"[A-Za-z0-9][A-Za-z0-9'’-]*", copy.get("body", ""))
    if len(words) < BODY_WORDS:
        problems.append(f"body says too little ({len(words)} word{'s' * (len(words) != 1)})")
    elif sum(w.islower() for w in words) >= BODY_WORDS and not FUNCTION_WORDS.intersection(w.lower() for w in words):
        problems.append(f"body does not read as a sentence (none of its {len(words)} words is 'a', 'the', 'of'...)")
    return problems


def repetition_problems(copy: dict[str, str]) -> list[str]:
    """Phrases a field says twice ("a love of the galaxy, a love of the galaxy"): small models loop, and copy
    that loops is not worth showing, however well it scores."""
    problems = []
    for name in ("title", "body"):
        words = re.findall(r"[\w'’-]+", copy.get(name, "").lower())
        seen: set[tuple[str, ...]] = set()
        for k in range(len(words) - REPEAT_WORDS + 1):
            run = tuple(words[k:k + REPEAT_WORDS])
            if run in seen:
                problems.append(f"{name} repeats '{' '.join(run)}'")
                break
            seen.add(run)
    return problems


def check(copy: dict[str, str], item: dict, categories: list[str], other_titles: list[str],
          brand_kit: dict, evidence: Sequence[str] = ()) -> Verdict:
    """All checks on one variant's text fields; `evidence`: the titles of the user's liked items it may name
    (its hook), see `fact_check`."""
    text = " ".join(copy.get(k, "") for k in ("title", "body", "cta"))
    reasons = [f"{k} is empty" for k in ("title", "body", "cta") if not copy.get(k, "").strip()]
    if not names_item(text, str(item["title"])):
        reasons.append("does not name the item")
    reasons += fact_problems(copy, item, categories, other_titles, brand_kit, evidence)
    reasons += brand_problems(text, brand_kit)
    reasons += blocklist_problems(text)
    reasons += script_problems(text)
    reasons += repetition_problems(copy)
    reasons += gibberish_problems(copy)
    return Verdict(not reasons, reasons)
