"""Visual briefs: the art direction of a banner, decided before any pixel is drawn.

A brief says what the background shows (subject), how it feels (mood, one of `MOODS`), its colours
(palette), where the weight sits (composition) and the text-to-image prompt. `brief_from` derives one
deterministically from the user's profile and the item's catalog facts, so a banner can be rebuilt
from (profile, item, seed) alone; `parse_brief` reads the same fields back from text so a language
model can write briefs later and be held to the same rules. Backgrounds never contain text: the
composer typesets the copy, where it can be checked for contrast and brand rules.
"""

from __future__ import annotations

import colorsys
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from generation.copy import display_name
from generation.intent import categories_of
from untrusted import clean

# The mood words the simulated audience reads off a banner (rewards.features reads the same list).
MOODS = ["dark", "bright", "warm", "cool", "dreamy", "vintage", "bold", "calm"]
COMPOSITIONS = ("left-weighted", "right-weighted", "centered", "diagonal")
NO_TEXT = "no text, no letters, no words, no logos"
DEFAULT_NEGATIVE = "text, letters, words, typography, caption, watermark, logo, signature, blurry, low quality"
HEX = re.compile(r"^#?([0-9a-fA-F]{6}|[0-9a-fA-F]{3})$")
FIELDS = {"subject": "Subject", "mood": "Mood", "palette": "Palette", "composition": "Composition",
          "prompt": "Prompt", "negative_prompt": "Negative"}


@dataclass(frozen=True)
class Tone:
    """How a mood treats colour: a lightness band, a saturation factor, its own colours and prompt words."""

    lightness: tuple[float, float]
    saturation: float
    colours: tuple[str, ...]
    words: str


MOOD_TONES: dict[str, Tone] = {
    "dark": Tone((0.06, 0.26), 0.8, ("#0b0b12", "#1b1424", "#3a0d16", "#14202e", "#2b2b33"),
                 "moody low-key lighting, deep shadows"),
    "bright": Tone((0.58, 0.82), 1.0, ("#ffd23f", "#ff8c42", "#3bceac", "#5ab8ff", "#ff6f91"),
                   "sunlit, vivid cheerful colours"),
    "warm": Tone((0.38, 0.68), 0.9, ("#e07a5f", "#f2cc8f", "#d1495b", "#edae49", "#a44a3f"),
                 "warm golden light, soft glow"),
    "cool": Tone((0.25, 0.6), 0.9, ("#1d3557", "#457b9d", "#48cae4", "#0077b6", "#90e0ef"),
                 "cool blue tones, crisp light"),
    "dreamy": Tone((0.62, 0.86), 0.6, ("#cdb4db", "#ffc8dd", "#bde0fe", "#a2d2ff", "#e0c3fc"),
                   "soft focus, pastel haze, ethereal"),
    "vintage": Tone((0.28, 0.6), 0.45, ("#a0785a", "#d4b483", "#6b4f3a", "#c19a6b", "#7a6a53"),
                    "faded film grain, sepia tones, retro"),
    "bold": Tone((0.32, 0.55), 1.0, ("#e63946", "#ffb703", "#023047", "#fb8500", "#8338ec"),
                 "high contrast, dramatic graphic shapes"),
    "calm": Tone((0.42, 0.75), 0.5, ("#84a98c", "#cad2c5", "#52796f", "#a3b18a", "#dad7cd"),
                 "serene, gentle light, minimal"),
}


@dataclass(frozen=True)
class CategoryArt:
    """The art direction a catalog category asks for: its mood, a key colour and background scenes."""

    mood: str
    colour: str
    scenes: tuple[str, ...]


CATEGORY_ART: dict[str, CategoryArt] = {
    "action": CategoryArt("bold", "#d9502a", (
        "a city skyline at dusk with streaking lights",
        "sparks flying over a steel bridge",
        "a desert highway under a blazing sky",
    )),
    "adventure": CategoryArt("bold", "#3c9a5a", (
        "a jungle ridge above misty valleys",
        "a mountain pass at sunrise",
        "a rugged coastline seen from above",
    )),
    "animation": CategoryArt("bright", "#ffbe3c", (
        "a playful landscape of rounded hills and puffy clouds",
        "a whimsical village of colourful rooftops",
    )),
    "children's": CategoryArt("bright", "#fac846", (
        "a sunny meadow with kites in the sky",
        "a toy-box world of colourful blocks",
        "a rainbow over green hills",
    )),
    "comedy": CategoryArt("bright", "#fad250", (
        "confetti drifting over a sunny stage",
        "a sunny street with striped awnings",
    )),
    "crime": CategoryArt("dark", "#46465a", (
        "a rain-soaked alley under neon light",
        "a city at night seen through window blinds",
    )),
    "documentary": CategoryArt("calm", "#968c78", (
        "a wide natural landscape at golden hour",
        "an aerial view of patterned fields",
    )),
    "drama": CategoryArt("calm", "#5a6e96", (
        "an empty room lit by a tall window",
        "a quiet shoreline at dawn",
    )),
    "fantasy": CategoryArt("dreamy", "#8c5abe", (
        "an enchanted forest with glowing mist",
        "floating islands among soft clouds",
    )),
    "film-noir": CategoryArt("vintage", "#28282d", (
        "a foggy street lamp at midnight",
        "venetian-blind shadows across a plaster wall",
    )),
    "horror": CategoryArt("dark", "#5a0a14", (
        "a fog-bound forest at night",
        "an empty corridor lit by a flickering bulb",
        "a lone house under a blood-red moon",
    )),
    "musical": CategoryArt("bright", "#e65aa0", (
        "stage lights over a velvet curtain",
        "a dance floor under coloured spotlights",
    )),
    "mystery": CategoryArt("dark", "#503c78", (
        "a misty moor under a pale moon",
        "a candle-lit old library",
    )),
    "romance": CategoryArt("warm", "#e6788c", (
        "a sunset over a quiet beach",
        "city lights reflected in a river at dusk",
    )),
    "sci-fi": CategoryArt("cool", "#28a0d2", (
        "a starfield above a distant planet",
        "a futuristic city of glass towers",
        "a nebula glowing in deep space",
    )),
    "thriller": CategoryArt("dark", "#1e325a", (
        "a city at night under heavy clouds",
        "a rain-streaked window at night",
    )),
    "war": CategoryArt("vintage", "#646e3c", (
        "a smoky horizon at dawn",
        "a field of poppies under a grey sky",
    )),
    "western": CategoryArt("warm", "#be8c46", (
        "a desert canyon at sunset",
        "a dusty frontier town at golden hour",
    )),
}
COMPOSITION_WORDS = {
    "left-weighted": "main subject on the left, open space on the right",
    "right-weighted": "main subject on the right, open space on the left",
    "centered": "symmetrical centered subject with open space around it",
    "diagonal": "dynamic diagonal composition",
}
ITEM_WEIGHT, INTEREST_WEIGHT, FOCUS_WEIGHT, THEME_WEIGHT = 1.0, 0.4, 0.2, 0.2


def normalise_hex(value: str) -> str:
    """'#ABC' or 'aabbcc' as '#aabbcc'; anything else is a ValueError that names the value."""
    match = HEX.match(str(value).strip())
    if not match:
        raise ValueError(f"'{value}' is not a hex colour like #1a2b3c")
    digits = match.group(1).lower()
    return "#" + ("".join(c * 2 for c in digits) if len(digits) == 3 else digits)


def hex_to_rgb(value: str) -> tuple[int, int, int]:
    digits = normalise_hex(value)[1:]
    return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)


def rgb_to_hex(rgb: tuple[float, float, float]) -> str:
    return "#" + "".join(f"{int(round(min(max(c, 0), 255))):02x}" for c in rgb)


@dataclass(frozen=True)
class Brief:
    """The art direction of one banner background; validated on creation whoever wrote it."""

    subject: str
    mood: str
    palette: tuple[str, ...]
    composition: str
    prompt: str
    negative_prompt: str = DEFAULT_NEGATIVE

    def __post_init__(self) -> None:
        if self.mood not in MOODS:
            raise ValueError(f"Mood '{self.mood}' is not one of: {', '.join(MOODS)}")
        if not 3 <= len(self.palette) <= 5:
            raise ValueError(f"Palette needs 3 to 5 colours, got {len(self.palette)}")
        try:
            object.__setattr__(self, "palette", tuple(normalise_hex(c) for c in self.palette))
        except ValueError as exc:
            raise ValueError(f"Palette: {exc}") from exc
        if self.composition not in COMPOSITIONS:
            raise ValueError(f"Composition '{self.composition}' is not one of: {', '.join(COMPOSITIONS)}")
        if not self.subject.strip() or not self.prompt.strip():
            raise ValueError("Subject and prompt must not be empty")

    @property
    def rgb(self) -> list[tuple[int, int, int]]:
        return [hex_to_rgb(c) for c in self.palette]


def _tasted(profile: Mapping) -> list[tuple[str, float]]:
    """(category, weight) pairs of the user's tastes: lasting interests, current focus, themes."""
    pairs = [(str(i.get("label", "")), INTEREST_WEIGHT * float(i.get("weight", 0))) for i in
             profile.get("interests") or []]
    focus = (profile.get("intent") or {}).get("focus") or []
    pairs += [(str(i.get("label", "")), FOCUS_WEIGHT * float(i.get("weight", 0))) for i in focus]
    for theme in profile.get("themes") or []:
        cats = list(theme.get("categories") or [])
        pairs += [(c, THEME_WEIGHT * float(theme.get("weight", 0)) / len(cats)) for c in cats]
    return [(label.lower(), w) for label, w in pairs if label.lower() in CATEGORY_ART and w > 0]


def _era_vote(year: object) -> float:
    """Older films pull toward the vintage mood: strongly before 1950, a little before 1970."""
    try:
        value = int(year)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0
    return 1.2 if value < 1950 else 0.6 if value < 1970 else 0.0


def choose_mood(categories: list[str], tastes: list[tuple[str, float]], year: object,
                rng: np.random.Generator) -> str:
    """The mood with the most votes: the item's categories first, then the user's tastes and the era.

    The item's own categories carry the most weight so a Horror film never gets a sunny banner because
    its viewer likes comedies; seeded jitter only breaks near-ties.
    """
    votes = dict.fromkeys(MOODS, 0.0)
    known = [c for c in categories if c in CATEGORY_ART]
    for category in known:
        votes[CATEGORY_ART[category].mood] += ITEM_WEIGHT / len(known)
    for category, weight in tastes:
        votes[CATEGORY_ART[category].mood] += weight
    votes["vintage"] += _era_vote(year)
    if not any(votes.values()):
        votes["calm"] = 1.0
    jitter = rng.uniform(0, 0.05, len(MOODS))
    return max(MOODS, key=lambda m: votes[m] + jitter[MOODS.index(m)])


def toned(colour: str, tone: Tone, rng: np.random.Generator) -> str:
    """A colour moved into a mood's lightness band and saturation, with a little seeded variation."""
    r, g, b = (c / 255 for c in hex_to_rgb(colour))
    hue, light, sat = colorsys.rgb_to_hls(r, g, b)
    low, high = tone.lightness
    light = float(np.clip(light + rng.uniform(-0.05, 0.05), low, high))
    sat = float(np.clip(sat * tone.saturation, 0, 1))
    return rgb_to_hex(tuple(c * 255 for c in colorsys.hls_to_rgb(hue, light, sat)))


def choose_palette(mood: str, categories: list[str], tastes: list[tuple[str, float]],
                   rng: np.random.Generator) -> tuple[str, ...]:
    """3-5 colours: the item's category colours, the user's favourite category colour, then the mood's own."""
    tone = MOOD_TONES[mood]
    favourite = [c for c, _ in sorted(tastes, key=lambda t: -t[1])][:1]
    keys = [CATEGORY_ART[c].colour for c in dict.fromkeys(categories + favourite) if c in CATEGORY_ART][:3]
    size = int(rng.integers(3, 6))
    extra = [tone.colours[i] for i in rng.permutation(len(tone.colours))]
    return tuple(toned(c, tone, rng) for c in (keys + extra)[:size])


def colour_name(colour: str) -> str:
    """Plain words for a colour ('deep red'): text-to-image models read names, not hex codes."""
    r, g, b = (c / 255 for c in hex_to_rgb(colour))
    hue, light, sat = colorsys.rgb_to_hls(r, g, b)
    shade = "deep " if light < 0.3 else "pale " if light > 0.72 else ""
    if sat < 0.15:
        return "near-black" if light < 0.12 else "off-white" if light > 0.9 else f"{shade}grey"
    names = ["red", "orange", "amber", "yellow", "lime", "green", "teal", "cyan", "azure", "blue", "violet", "magenta",
             "pink"]
    bounds = [0.03, 0.08, 0.12, 0.17, 0.24, 0.42, 0.48, 0.53, 0.6, 0.7, 0.79, 0.88, 0.97]
    name = next((n for n, top in zip(names, bounds, strict=True) if hue < top), "red")
    return shade + name


def choose_scene(mood: str, categories: list[str], rng: np.random.Generator) -> str:
    """A scene from the item's categories, preferring those whose mood won (Star Wars: space, not a beach)."""
    known = [c for c in categories if c in CATEGORY_ART]
    fitting = [c for c in known if CATEGORY_ART[c].mood == mood] or known
    scenes = [s for c in fitting for s in CATEGORY_ART[c].scenes] or [
        "an abstract landscape of soft light and layered shapes"]
    return scenes[int(rng.integers(len(scenes)))]


def display_title(title: object) -> str:
    """A catalog title cleaned for art direction and named as copy names it (`copy.display_name`): no year
    suffix, 'Usual Suspects, The' as 'The Usual Suspects'."""
    return display_name(clean(title, limit=120))


def write_prompt(scene: str, mood: str, palette: tuple[str, ...], composition: str) -> str:
    colours = ", ".join(dict.fromkeys(colour_name(c) for c in palette))
    return (f"{scene}, {MOOD_TONES[mood].words}, colour palette of {colours}, {COMPOSITION_WORDS[composition]}, "
            f"cinematic background art, {NO_TEXT}")


def brief_from(profile: Mapping, item: Mapping, seed: int) -> Brief:
    """Art direction for one item shown to one user, deterministic in (profile, item, seed)."""
    title = display_title(item.get("title"))
    rng = np.random.default_rng([seed, zlib.crc32(title.encode("utf-8"))])
    categories = [c.lower() for c in categories_of(item.get("category"))]
    tastes = _tasted(profile)
    mood = choose_mood(categories, tastes, item.get("year"), rng)
    palette = choose_palette(mood, categories, tastes, rng)
    scene = choose_scene(mood, categories, rng)
    composition = COMPOSITIONS[int(rng.integers(len(COMPOSITIONS)))]
    subject = f"{scene}, evoking {title}" if title else scene
    return Brief(subject, mood, palette, composition, write_prompt(scene, mood, palette, composition))


def brief_to_text(brief: Brief) -> str:
    """The fixed line format that `parse_brief` reads (and an LLM is asked to write)."""
    values = {"subject": brief.subject, "mood": brief.mood, "palette": ", ".join(brief.palette),
              "composition": brief.composition, "prompt": brief.prompt, "negative_prompt": brief.negative_prompt}
    return "\n".join(f"{FIELDS[key]}: {value}" for key, value in values.items())


def _fields(text: str) -> dict[str, str]:
    """'Key: value' lines by field name; other lines (model chatter) are ignored, the first of a key wins."""
    labels = {label.lower(): key for key, label in FIELDS.items()} | {"negative prompt": "negative_prompt"}
    found: dict[str, str] = {}
    for line in str(text).splitlines():
        label, sep, value = line.partition(":")
        key = labels.get(label.strip().strip("*-# ").lower())
        if sep and key and key not in found:
            found[key] = value.strip()
    return found


def parse_brief(text: str) -> Brief:
    """A brief from its text form; a ValueError says which field is missing or wrong."""
    found = _fields(text)
    missing = [FIELDS[k] for k in FIELDS if k != "negative_prompt" and not found.get(k)]
    if missing:
        raise ValueError(f"Brief is missing the line(s): {', '.join(m + ':' for m in missing)}")
    palette = tuple(c.strip() for c in re.split(r"[,\s]+", found["palette"]) if c.strip())
    prompt = clean(found["prompt"], limit=400)
    if "no text" not in prompt.lower():
        prompt = f"{prompt}, {NO_TEXT}"
    return Brief(subject=clean(found["subject"], limit=160), mood=found["mood"].strip().lower(), palette=palette,
                 composition=found["composition"].strip().lower(), prompt=prompt,
                 negative_prompt=clean(found.get("negative_prompt") or DEFAULT_NEGATIVE, limit=300))
