"""Grounding: every name, number, claim and quotation in a variant must be supported by what we know.

What we know about an item (`Facts`): its catalog row (title, year, categories with their aliases, a
description where the dataset has one) and the brand kit. A variant may state only that. The check reads
each field (title, body, CTA) after blanking the phrases it may always use (the names the item goes by,
its categories, the brand's name and call to action), and names every statement left without support:

- names: a run of capitalised words ("The Force Awakens", "Harrison Ford") or one capitalised word inside
  a sentence. Every word of a run must be a word of the description or the brand kit; a sentence (or the
  hook after a headline's separator) may open with one of the common words in `common_words.txt`
  ("Watch", "Join the Rebellion" where the description tells of a rebellion). Words of the title count
  only as the whole name or a run of it as written there ("a crime in the Bronx" for Rumble in the
  Bronx, "Willy Wonka" for Willy Wonka and the Chocolate Factory); "Star Wars: The Lost Star" invents
  a subtitle.
- numbers: a token with a digit (years, "#1", "$9.99", "10/10", "4 stars") must be the item's year (or its
  decade, "1970s"), or occur in the description or the brand kit; digits inside the name are blanked.
- claims: superlatives, rankings, awards, hype and series ("best", "number one", "Oscar-nominated", "five-star",
  "a hundred million", "the epic trilogy", "a sequel") unless the description or brand kit says so (the
  title does not: "My Best Friend's Wedding" is no claim to be the best).
- quotations: a phrase in quotes must occur in the facts word for word, or be one of the item's names.
- stories: the people, places and events of a plot ("a young man in a small town", "a time-traveling
  adventure") unless the title, description, brand kit or a category holds them (`story_claims`).

Names written in lower case ("directed by steven spielberg") are not found: the check reads capitals.
The same function serves the Studio's checks (`generation.safety`), the tuning reward's gate, the
evaluation's factuality metric and both simulated audiences, so nothing that the Studio rejects is paid
for anywhere.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from generation import story_claims, titles
from generation.intent import aliases, categories_of

FIELDS = ("title", "body", "cta")
# words ending in -est that are no superlative ("the coolest" is; "a quest" is not)
NOT_SUPERLATIVES = {"arrest", "attest", "behest", "bequest", "conquest", "contest", "digest", "earnest", "everest",
                    "harvest", "honest", "infest", "interest", "invest", "manifest", "midwest", "modest", "molest",
                    "northwest", "protest", "request", "southwest", "suggest", "tempest", "unrest", "detest",
                    "budapest", "bucharest", "forest", "dishonest", "biggest", "greatest", "finest", "highest"}
BLANK = "\u2022"  # stands for a blanked phrase: it ends a run of capitals without ending the sentence
CONNECTORS = {"of", "the", "and", "a", "an", "in", "on", "at", "to", "for", "de", "la", "le", "du", "von", "van",
              "&"}
CLAIMS = re.compile(
    r"(?<![\w-])(?:best(?:[- ](?:selling|seller|loved|ever))?|greatest|finest|biggest|highest[- ]\w+|top[- ]rated|"
    r"top[- ](?:ten|10|five|5|100)|number one|no\. ?1|all[- ]time|of all time|ever made|(?:multi-)?award[- ]\w+|"
    r"awards?|oscars?|academy awards?|emmys?|golden globes?|baftas?|grammys?|nominated|nominee|winners?|"
    r"critically acclaimed|acclaimed|famous|legendary|record[- ]breaking|blockbuster|smash hit|box[- ]office|"
    r"masterpiece|ultimate|iconic|beloved|cult (?:classic|hit|favou?rite)|"
    r"must[- ](?:see|watch)|popular|trilog(?:y|ies)|sequels?|prequels?|franchises?|remakes?|series|"
    r"fan[- ]favou?rites?|crowd[- ]pleasers?|(?:big|huge|smash) hits?|"
    r"(?:most|least)[- ](?!of\b)[a-z]+|bestsellers?|"
    r"(?<!between )(?:one|two|three|four|five)[- ]stars?|"
    r"(?:ten|five|10|5) out of (?:ten|five|10|5)|hundreds?|thousands?|millions?|billions?|"
    r"[a-z]+iest|(?!(?:" + "|".join(sorted(NOT_SUPERLATIVES)) + r")\b)[a-z]{2,}[^aeiou\W]est)(?!\w)",
    re.IGNORECASE)
# The claim words small models reach for (bench/generation.py's rejections): the writer keeps the engine from
# writing them at all unless the facts say so (`claim_words_to_avoid`); the check above still reads every claim.
CLAIM_WORDS = ("best", "greatest", "finest", "biggest", "famous", "legendary", "iconic", "beloved", "acclaimed",
               "masterpiece", "ultimate", "blockbuster", "award", "awards", "oscar", "oscars", "winner", "winners",
               "nominated", "funniest", "scariest", "darkest", "coolest", "latest", "newest", "hundred", "hundreds",
               "thousand", "thousands", "million", "millions", "billion", "billions", "largest", "oldest",
               "youngest", "fastest", "strongest", "richest", "deadliest", "earliest", "brightest", "smallest",
               "longest", "hottest", "popular", "trilogy", "sequel", "prequel", "franchise", "remake", "series",
               "fan favorite", "fan favourite", "fan-favorite", "crowd-pleaser", "big hit", "smash hit", "must-see",
               "must-watch", "must see", "must watch")
TOKEN = re.compile(r"[^\W\d_][\w'’-]*|[#$€£']?\d(?:[\d%]|[.,:/](?=\d))*[^\W\d_]*|[.!?:;—–\u2022,]|\s[-–]\s")
QUOTED = re.compile(r"[\"“”]([^\"“”]{2,80})[\"“”]|(?<!\w)['‘]((?:[^'‘’\n]|['’](?=\w)){2,80})['’](?!\w)")
CONTRACTION = re.compile(r"'(?:s|re|ll|ve|d|m)$|n't$")
SENTENCE_END = {".", "!", "?", ":", ";", "—", "–"}
YEAR = re.compile(r"^(1[89]\d\d|20\d\d)$")
DECADE = re.compile(r"^'?(\d{2}|1[89]\d0|20\d0)s$")


@lru_cache(maxsize=1)
def common_words() -> frozenset[str]:
    """The short list of words that may open a sentence without being a name."""
    lines = (Path(__file__).with_name("common_words.txt")).read_text(encoding="utf-8").splitlines()
    return frozenset(w.strip().lower() for w in lines if w.strip() and not w.startswith("#"))


def _words(text: str) -> list[str]:
    return [w.lower().replace("’", "'") for w in re.findall(r"[^\W_][\w'’-]*", text)]


def _forms(word: str) -> set[str]:
    """A word and the forms copy may bend it into: plural and possessive."""
    word = word.lower().replace("’", "'")
    return {f for f in (word, word.removesuffix("'s"), word.removesuffix("'"), word.removesuffix("s"),
                        word.removesuffix("es")) if f}


def names_of(title: str) -> list[str]:
    """The names an item goes by: 'Usual Suspects, The (1995)' is also 'The Usual Suspects' and 'Usual
    Suspects'; 'Seven (Se7en) (1995)' also 'Se7en'; 'Terminator 2: Judgment Day' also 'Terminator 2'."""
    bare = titles.without_year(title)
    main = re.split(r"\s+\(", bare, maxsplit=1)[0]
    moved = re.match(r"^(.*),\s*(The|A|An)$", main)
    spoken = f"{moved.group(2)} {moved.group(1)}" if moved else main
    names = [spoken, main, moved.group(1) if moved else re.sub(r"^(The|A|An)\s+", "", main),
             spoken.split(":")[0], *re.findall(r"\(([^()]+)\)", bare)]
    return [n.strip() for n in dict.fromkeys(names) if re.search(r"[^\W\d_]", n)]  # "M" is a name, "2001" not


@dataclass(frozen=True)
class Facts:
    """What copy about one item may state."""

    phrases: tuple[str, ...]  # always allowed, blanked before reading: names, own categories, brand name and CTA
    words: frozenset[str]  # words a capitalised word may be: the description's and the brand kit's
    numbers: frozenset[str]  # the year(s), and digits in the description and the brand kit
    claims_text: str  # lower-case description and brand kit: where a claim may be supported
    text: str  # lower-case facts with single spaces, for quotations
    year: int | None
    names: tuple[str, ...] = ()  # the names the item goes by, lower case: a part of one may be named alone
    story: frozenset[str] = frozenset()  # the story words the facts hold (`story_claims.supported`)

    def supports(self, word: str) -> bool:
        return bool(_forms(word) & self.words)


def _year(value: object) -> int | None:
    try:
        return int(float(value)) if value is not None and str(value).strip() not in ("", "nan", "None") else None
    except ValueError:
        return None


def facts_for(item: Mapping, brand_kit: Mapping | None = None) -> Facts:
    """The facts of one catalog row (title, year, categories, description) and of the brand kit."""
    kit = brand_kit or {}
    title = str(item.get("title") or "")
    categories = categories_of(item.get("category"))
    brand = [str(kit.get("name") or ""), str(kit.get("default_cta") or ""),
             *(str(c) for c in kit.get("calls_to_action") or ())]
    own = [*names_of(title), *categories, *(a for c in categories for a in aliases(c)), *brand]
    phrases = tuple(sorted({p.strip() for p in own if p.strip()}, key=len, reverse=True))
    described = " ".join(str(x or "") for x in (item.get("description"), *brand, kit.get("required_disclaimer")))
    year = _year(item.get("year"))
    numbers = set(re.findall(r"\d+", described)) | {str(y) for y in (year, titles.year_of(title)) if y}
    text = " ".join(" ".join([title, " ".join(categories), described, str(year or "")]).lower().split())
    return Facts(phrases, frozenset(f for w in _words(described) for f in _forms(w)), frozenset(numbers),
                 " ".join(described.lower().split()), text, year,
                 tuple(" ".join(_words(name)) for name in names_of(title)),
                 story_claims.supported(categories, f"{title} {described}"))


def claim_words_to_avoid(facts: Facts) -> list[str]:
    """The claim words of `CLAIM_WORDS` that the description and brand kit do not support."""
    return [w for w in CLAIM_WORDS if not re.search(rf"(?<![\w-]){w}(?![\w-])", facts.claims_text)]


def _blank(text: str, facts: Facts) -> str:
    """The text with every always-allowed phrase replaced by BLANK (longest first, whole words only)."""
    for phrase in facts.phrases:
        text = re.sub(rf"(?<![\w-]){re.escape(phrase)}(?![\w-])", f" {BLANK} ", text, flags=re.IGNORECASE)
    return text


def _number_problem(token: str, facts: Facts) -> str | None:
    if (decade := DECADE.match(token)) and facts.year and str(facts.year)[2 if len(decade.group(1)) == 2 else 0:
                                                                             -1] == decade.group(1)[:-1]:
        return None
    if all(d in facts.numbers for d in re.findall(r"\d+", token)) and not re.search(r"[#$€£%]", token):
        return None
    if YEAR.match(token):
        return f"says {token}, but the item is from {facts.year or 'an unknown year'}"
    return f"states '{token}', which the catalog does not support"


def _run_problem(run: list[str], opens: bool, field: str, facts: Facts) -> str | None:
    """The name a run of capitalised words states without support, or None."""
    while run and run[0].lower() in CONNECTORS:
        run = run[1:]
    while run and run[-1].lower() in CONNECTORS:
        run = run[:-1]
    content = [w for w in run if w.lower() not in CONNECTORS]
    if not content or all(facts.supports(w) for w in content):
        return None
    part = re.sub(r"'s?$", "", " ".join(_words(" ".join(run))))  # "Bobby Fischer's journey" names him too
    if any(re.search(rf"(?<![\w'-]){re.escape(part)}(?:'s?)?(?![\w'-])", name) for name in facts.names):
        return None  # a part of the item's own name, as written there: "the Bronx", "Willy Wonka", "Tiffany's"
    common = common_words()
    opener = CONTRACTION.sub("", content[0].lower().replace("’", "'"))  # "They're" opens as "they"
    if opens and opener in common and all(facts.supports(w) for w in content[1:]):
        return None  # a sentence opening with a common word: "Watch", "Join the Rebellion" (described)
    if field == "cta" and all(w.lower() in common for w in content):
        return None  # calls to action are written in title case: "Book Tickets"
    return " ".join(run).strip("'’\"")


def _names(tokens: list[str], facts: Facts, field: str) -> list[str]:
    """Runs of capitalised words that the facts do not support (see the module's rules)."""
    found, run = [], []
    opens = sentence_start = True
    for token in tokens + ["."]:
        word = token.strip()
        if word[:1].isalpha() and word[:1].isupper() and word.lower() != "i":
            if not run:
                opens = sentence_start
            run.append(word)
        elif run and word.lower() in CONNECTORS:
            run.append(word)
        elif run:
            if problem := _run_problem(run, opens, field, facts):
                found.append(problem)
            run = []
        if word != BLANK:
            sentence_start = word in SENTENCE_END or (token.strip() in ("-", "–") and token != word)
    return found


def problems(copy: Mapping[str, str], facts: Facts) -> list[str]:
    """Every statement in the variant's fields that the facts do not support, each named in its reason."""
    reasons: list[str] = []
    names = {n.lower() for n in facts.phrases}
    for field in FIELDS:
        text = str(copy.get(field) or "")
        for pair in QUOTED.findall(text):
            phrase = " ".join((pair[0] or pair[1]).lower().split()).strip(" .,!?;:")
            if phrase not in facts.text and phrase not in names:
                reasons.append(f"quotes '{phrase}', which the catalog does not support")
        blanked = _blank(text, facts)
        tokens = TOKEN.findall(blanked)
        for name in _names(tokens, facts, field):
            reasons.append(f"names '{name}', which the catalog does not support")
        for token in tokens:
            if any(c.isdigit() for c in token) and (problem := _number_problem(token.strip(".,:;!?"), facts)):
                reasons.append(problem)
        for told in story_claims.told(blanked, facts.story):
            reasons.append(f"tells of '{told}', which the catalog does not support")
        for claim in CLAIMS.findall(blanked):
            if " ".join(claim.lower().split()) not in facts.claims_text:
                reasons.append(f"claims '{claim}', which the catalog does not support")
    return list(dict.fromkeys(reasons))
