"""What in copy claims a catalog category: the one rule the Studio's check, the engine's bans and both
simulated audiences read, so no audience pays for a category the Studio would reject, or the reverse.

A category is claimed by its own name anywhere ("a comedy", "two dramas", "Sci-Fi"), by the adjective that
means it ("romantic" is Romance; "comedic", "funny" and "hilarious" Comedy; "animated" Animation), and by its
aliases that are unambiguous ("science fiction", "noir", "documentaries"). Aliases that are also everyday words ("war",
"family", "kids", "children", "music") claim the category only as the kind of film: "a war film", "family
movie night", "kid-friendly", "a film for the whole family"; "a war between two families" states a plot,
not a genre. Callers blank the item's own names first ("Kids" the film is no Children's claim); a plural
such as "Star Wars" is no "war film" either way.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

from generation.intent import aliases

# aliases that are everyday words: they name a category only before a word for a kind of film
EVERYDAY = {"war", "family", "kids", "children", "music"}
KINDS = (r"(?:films?|movies?|flicks?|pictures?|classics?|fare|genre|favou?rites?|nights?|fans?|friendly|"
         r"audiences?)")
ADJECTIVES = {"romance": ["romantic"], "comedy": ["comedic", "funny", "hilarious"], "animation": ["animated"]}
FOR_CHILDREN = r"for (?:the )?(?:whole )?(?:family|kids|children)"


def _plural(word: str) -> str:
    """A word and its plural as a pattern: comedy/comedies, drama/dramas, sci-fi/sci-fis."""
    if re.search(r"[^aeiou]y$", word):
        return re.escape(word[:-1]) + "(?:y|ies)"
    return re.escape(word) + "(?:e?s)?"


def _names(label: str) -> list[str]:
    """A category's label, its aliases and its adjective, lower case; a stem alias ("documentar" of
    Documentary) is left out: the label's own forms cover it."""
    key = label.lower().strip()
    found = [key, *(a.strip() for a in aliases(label)), *ADJECTIVES.get(key, [])]
    return [n for n in dict.fromkeys(found) if n and (n == key or n in EVERYDAY or not key.startswith(n))]


def _possessive(word: str) -> str:
    """An everyday alias as it qualifies a noun: "war", "kid"/"kids'", "family's"; never a plural ("Wars")."""
    if word.endswith("s"):
        return re.escape(word[:-1]) + "s?'?"
    return re.escape(word) + "(?:'s)?"


@lru_cache(maxsize=256)
def pattern(label: str) -> re.Pattern:
    """The phrases that claim one category (see the module's rule), case-insensitive, whole words."""
    key = label.lower().strip()
    names = _names(label)
    anywhere = [_plural(n) for n in names if n not in EVERYDAY]
    as_kind = [_possessive(n) + r"[\s-]+" + KINDS for n in names if n in EVERYDAY]
    if key == "children's":
        as_kind.append(FOR_CHILDREN)
    forms = "|".join(anywhere + as_kind) or r"(?!x)x"
    return re.compile(rf"(?<![\w-])(?:{forms})(?![\w-])", re.IGNORECASE)


def counts(text: str, labels: Sequence[str]) -> list[int]:
    """How many times the text claims each category of `labels`, in order."""
    return [len(pattern(label).findall(text)) for label in labels]


def claimed(text: str, labels: Sequence[str]) -> list[str]:
    """The categories of `labels` that the text claims."""
    return [label for label in labels if pattern(label).search(text)]


def words(labels: Sequence[str]) -> list[str]:
    """Words and phrases that claim one of these categories wherever they stand: what the engine keeps the model
    from writing about an item that lacks them ("science fiction" loses " fiction" after " science"; the
    everyday words are left to the check)."""
    found = [label.strip() if name == label.lower().strip() else name
             for label in labels for name in _names(label) if name not in EVERYDAY]
    return list(dict.fromkeys(found))
