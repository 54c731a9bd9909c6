"""What in copy tells the item's story: the characters, places, creatures and events of a plot ("a young man in
a small town", "a time-traveling adventure", "a superhero", "a murder on a ship"). A catalog row of title, year
and categories holds no plot, so a small model asked for an ad invents one, and an invented plot is an untrue
ad. A story word is supported only where the item's own facts hold it: its description, its title ("Dead Man
Walking" may speak of a man), the brand kit, or a category that always has it (every War film has its soldiers
and battles, every Western its cowboys). The Studio's check reads these words (`grounding.problems`) and the
writer keeps the model from writing the single-token ones at all (`safety.words_to_avoid`), the same rule both
ways.

Themes and moods ("loss", "redemption", "courage", "a love story" of a Romance) are no plot: they stay the
copy's to choose. The list (`story_words.txt`) holds what small models invent most often and its neighbours,
not every noun: a plot told in other words ("a pig named Willy Wonka") still passes, and the worked examples
(`copy.EXAMPLES`), which sell with the catalog row's facts and a mood, are what keeps most copy off plots.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

# People, creatures, places, things and events a plot is made of, singular (`story_words.txt`); `_forms` adds
# the plurals and possessives copy bends them into.
WORDS = frozenset(word for line in Path(__file__).with_name("story_words.txt").read_text(encoding="utf-8").splitlines()
                  if not line.startswith("#") for word in line.split())
PLURALS = {"hero": "heroes", "superhero": "superheroes", "man": "men", "woman": "women", "child": "children",
           "wife": "wives", "thief": "thieves", "policeman": "policemen"}
# story phrases of more than one word: time travel, and a claim about where the story comes from
PHRASES = ("time travel", "time traveler", "time traveller", "time traveling", "time travelling", "true story",
           "based on a true", "real events", "real life story")
# the story words a category always holds (the lower-case category label: words)
BY_CATEGORY = {
    "war": {"soldier", "war", "battle"},
    "western": {"cowboy", "outlaw", "gunslinger", "sheriff"},
    "action": {"hero", "heroine"},
    "adventure": {"hero", "heroine"},
    "children's": {"kid", "child"},
    "documentary": {"true story", "real events", "real life story"},
}


def _forms(word: str) -> list[str]:
    """A story word as copy writes it: singular, plural, possessive ("man's", "men's", "cities'")."""
    plural = PLURALS.get(word) or (word[:-1] + "ies" if re.search(r"[^aeiou]y$", word) else
                                   word + "es" if re.search(r"(?:s|sh|ch|x)$", word) else word + "s")
    return [word, plural]


@lru_cache(maxsize=1)
def pattern() -> re.Pattern:
    """Every story word and phrase, whole words, any case, with its plural and possessive; hyphens join
    ("time-traveling", "small-town")."""
    forms = sorted({re.escape(f) for w in WORDS for f in _forms(w)}, key=len, reverse=True)
    phrases = [re.escape(p).replace(r"\ ", r"[\s-]+") for p in PHRASES]
    return re.compile(rf"(?<![\w'’])(?:{'|'.join(phrases + forms)})(?:['’]s?)?(?![\w'’])", re.IGNORECASE)


def base(found: str) -> str:
    """The story word or phrase a match stands for: "men's" -> "man", "Time-Traveling" -> "time traveling"."""
    text = re.sub(r"[\s-]+", " ", found.lower().replace("’", "'")).removesuffix("'s").rstrip("'")
    for word, plural in PLURALS.items():
        if text == plural:
            return word
    if text in WORDS or text in PHRASES:
        return text
    for ending, stem in (("ies", "y"), ("es", ""), ("s", "")):
        if text.endswith(ending) and (text[: -len(ending)] + stem) in WORDS:
            return text[: -len(ending)] + stem
    return text


def supported(categories: Iterable[str], facts_text: str) -> frozenset[str]:
    """The story words these facts hold: those their text (title, description, brand kit) says, and those
    their categories always have (`BY_CATEGORY`)."""
    said = {base(m.group(0)) for m in pattern().finditer(facts_text)}
    return frozenset(said.union(*(BY_CATEGORY.get(c.lower().strip(), set()) for c in categories)))


def told(text: str, allowed: frozenset[str]) -> list[str]:
    """The story words and phrases of `text` that `allowed` does not hold, as written, each once."""
    return list(dict.fromkeys(m.group(0) for m in pattern().finditer(text) if base(m.group(0)) not in allowed))


def words_to_avoid(allowed: frozenset[str]) -> list[str]:
    """The single story words (with their plurals) the engine keeps out of copy about an item whose facts
    allow only `allowed`."""
    return [form for word in sorted(WORDS - allowed) for form in _forms(word)]
