"""The composer: typesets title, call to action and brand mark (or logo) on a design's stage, at every IAB size.

A design (`generation.designs`) gives each size its backdrop, built from art rendered for (or cover-cropped
to) that size, so nothing is stretched, and the area its text goes in. Text is fitted into a layout of slots
in that area, inside a 6 % safe zone, shrinking the font and wrapping lines until it fits; a word is never
split, and only a title may be cut (after a whole word, with an ellipsis). Legibility is measured, not
assumed: the WCAG 2 contrast ratio between the text colour and every pixel actually behind the text must
reach AA (4.5:1, or 3:1 for text of 24 px and more, all of it bold); when neither light nor dark text
reaches it, a translucent plate is laid behind the text and made more opaque until it does. The returned
`Banner` carries the measured contrast and the fields the audience model reads (mean colour, mood, contrast).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

import settings
from generation.brief import HEX, hex_to_rgb, normalise_hex
from store import pictures
from untrusted import clean, findings

SIZES: tuple[tuple[int, int], ...] = ((300, 250), (728, 90), (160, 600), (1200, 628), (1080, 1080))
SAFE_MARGIN = 0.06
AA_NORMAL, AA_LARGE, LARGE_TEXT_PX = 4.5, 3.0, 24
LIGHT, DARK = (255, 255, 255), (17, 17, 17)
PLATE_OPACITY = (0.35, 0.5, 0.65, 0.8, 1.0)
FONT_FILES = ("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
              "/usr/share/fonts/truetype/liberation2/LiberationSans-Bold.ttf",
              "/usr/share/fonts/truetype/liberation/LiberationSans-Bold.ttf")
BRAND_KIT_PATH = settings.REPO_ROOT / "assets" / "brand_kit.json"
BRAND_KEYS = ("name", "voice", "banned_words", "required_disclaimer", "colours")
OPTIONAL_BRAND_KEYS = ("default_cta", "calls_to_action", "logo")
MAX_CALLS_TO_ACTION = 8
PNG_COMPRESSION = 3  # zlib level: half the encoding time of Pillow's default 6 for files a fifth larger
ROLES = ("brand", "title", "cta", "disclaimer")

Box = tuple[int, int, int, int]
RGB = tuple[int, int, int]


@dataclass(frozen=True)
class BrandKit:
    """The brand's name (typeset as its mark), voice, banned words, required disclaimer and colours."""

    name: str
    voice: str
    banned_words: tuple[str, ...]
    required_disclaimer: str
    primary: str
    accent: str
    default_cta: str = "Learn more"  # the call to action where no other is chosen
    calls_to_action: tuple[str, ...] = ()  # the ones variants take in turn (default: the default alone)
    logo: str = ""  # absolute path of the brand's logo, drawn in the brand's place; empty: the name is typeset

    @property
    def ctas(self) -> tuple[str, ...]:
        """The calls to action copy may carry, in the order variants take them."""
        return self.calls_to_action or (self.default_cta,)

    def check_terms(self) -> dict:
        """What the copy checks read from the kit: banned words, and the text copy may quote (its name,
        calls to action and disclaimer) as facts (`generation.grounding`)."""
        return {"name": self.name, "banned_words": list(self.banned_words), "default_cta": self.default_cta,
                "calls_to_action": list(self.ctas), "required_disclaimer": self.required_disclaimer}


def _text(data: Mapping, key: str, source: str, limit: int, required: bool) -> str:
    value = data[key]
    if not isinstance(value, str) or (required and not value.strip()):
        raise ValueError(f"{source}: '{key}' must be a {'non-empty ' if required else ''}string")
    if len(value) > limit:
        raise ValueError(f"{source}: '{key}' is {len(value)} characters long; the limit is {limit}")
    _plain(value, key, source)
    return clean(value, limit)


def _plain(value: str, key: str, source: str) -> None:
    """Brand kit text is typeset as given, so what cleaning would remove (markup, instructions, links,
    personal data) is refused with its key rather than silently cut out of a legal disclaimer."""
    if found := findings(value):
        raise ValueError(f"{source}: '{key}' contains {', '.join(found)}; brand kit fields hold plain text only")


def _colours(value: object, source: str) -> tuple[str, str]:
    if not isinstance(value, Mapping) or set(value) != {"primary", "accent"}:
        raise ValueError(f"{source}: 'colours' must be an object with exactly 'primary' and 'accent'")
    for key in ("primary", "accent"):
        if not isinstance(value[key], str) or not HEX.match(value[key].strip()):
            raise ValueError(f"{source}: 'colours.{key}' must be a hex colour like #1a2b3c, not {value[key]!r}")
    return normalise_hex(value["primary"]), normalise_hex(value["accent"])


def parse_brand_kit(data: object, source: str = "Brand kit") -> BrandKit:
    """A validated brand kit from parsed JSON; every error names the offending key."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{source} must be a JSON object with the keys {', '.join(BRAND_KEYS)}")
    unknown = sorted(set(data) - set(BRAND_KEYS) - set(OPTIONAL_BRAND_KEYS))
    if unknown:
        keys = ", ".join(BRAND_KEYS + OPTIONAL_BRAND_KEYS)
        raise ValueError(f"{source}: unknown key '{unknown[0]}'; the keys are {keys}")
    missing = [k for k in BRAND_KEYS if k not in data]
    if missing:
        raise ValueError(f"{source}: '{missing[0]}' is missing")
    words = data["banned_words"]
    if not isinstance(words, list) or not all(isinstance(w, str) and w.strip() for w in words):
        raise ValueError(f"{source}: 'banned_words' must be a list of non-empty strings")
    for word in words:
        _plain(word, "banned_words", source)
    primary, accent = _colours(data["colours"], source)
    cta = _text(data, "default_cta", source, 25, True) if "default_cta" in data else BrandKit.default_cta
    return BrandKit(_text(data, "name", source, 40, True), _text(data, "voice", source, 300, False),
                    tuple(w.strip().lower() for w in words), _text(data, "required_disclaimer", source, 200, False),
                    primary, accent, cta, _calls_to_action(data, source), _logo(data.get("logo", ""), source))


def _logo(value: object, source: str) -> str:
    """The optional logo: empty, or the absolute path of a PNG, JPEG or WebP that opens (`store.pictures`)."""
    if not isinstance(value, str):
        raise ValueError(f"{source}: 'logo' must be the path of an image file, or empty")
    if not value.strip():
        return ""
    path = Path(value.strip()).expanduser()
    if not path.is_absolute():
        raise ValueError(f"{source}: 'logo' must be an absolute path, not '{value}'")
    if problem := pictures.problem(path):
        raise ValueError(f"{source}: 'logo' {problem}")
    return str(path)


def _calls_to_action(data: Mapping, source: str) -> tuple[str, ...]:
    """The optional list of calls to action, each plain text of at most 25 characters."""
    value = data.get("calls_to_action", [])
    if not isinstance(value, list) or len(value) > MAX_CALLS_TO_ACTION:
        raise ValueError(f"{source}: 'calls_to_action' must be a list of at most {MAX_CALLS_TO_ACTION} strings")
    return tuple(dict.fromkeys(_text({"calls_to_action": v}, "calls_to_action", source, 25, True) for v in value))


def load_brand_kit(path: str | Path | None = None) -> BrandKit:
    """The brand kit from a JSON file (default: assets/brand_kit.json)."""
    file = Path(path) if path else BRAND_KIT_PATH
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"Brand kit {file} cannot be read as JSON: {exc}") from exc
    return parse_brand_kit(data, f"Brand kit {file}")


def configured_brand_kit() -> BrandKit:
    """The brand kit the settings name (validated; a broken file raises ValueError naming the key)."""
    return load_brand_kit(settings.load().brand_kit)


def _linear(c: np.ndarray) -> np.ndarray:
    """sRGB channel values in 0..1 -> linear light (WCAG 2)."""
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


_LINEAR_BYTES = _linear(np.arange(256) / 255.0)  # every 8-bit channel value, so pixels are a table lookup


def relative_luminance(rgb: np.ndarray | tuple) -> np.ndarray:
    """WCAG 2 relative luminance of sRGB colours (0-255, last axis RGB)."""
    c = np.asarray(rgb)
    linear = _LINEAR_BYTES[c] if c.dtype == np.uint8 else _linear(c.astype(np.float64) / 255.0)
    return linear @ np.array([0.2126, 0.7152, 0.0722])


def contrast_ratio(a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    """WCAG 2 contrast ratio (1-21) between relative luminances."""
    return (np.maximum(a, b) + 0.05) / (np.minimum(a, b) + 0.05)


def worst_contrast(colour: RGB, pixels: np.ndarray) -> float:
    """The lowest contrast between a text colour and any pixel behind it: text must read on all of them."""
    return float(contrast_ratio(relative_luminance(colour), relative_luminance(pixels.reshape(-1, 3))).min())


def required_contrast(font_px: int) -> float:
    """WCAG AA: 4.5:1 for normal text, 3:1 for large text (all text here is bold; large from 24 px)."""
    return AA_LARGE if font_px >= LARGE_TEXT_PX else AA_NORMAL


@lru_cache(maxsize=512)
def load_font(size: int, files: tuple[str, ...] = FONT_FILES) -> ImageFont.FreeTypeFont:
    """The first installed bold sans font at `size` px, else Pillow's own scalable font."""
    for file in files:
        if Path(file).is_file():
            return ImageFont.truetype(file, size)
    return ImageFont.load_default(size=size)


@dataclass(frozen=True)
class Slot:
    """Where one piece of text may go: a box inside the safe zone, alignment, line and size limits."""

    box: Box
    align: str  # left, center, right
    valign: str  # top, middle, bottom
    max_lines: int
    max_px: int
    min_px: int
    pad: int  # space between text and the edge of its plate
    truncate: bool = True  # a title may end in an ellipsis; a call to action or a legal disclaimer may not


def safe_area(width: int, height: int) -> Box:
    mx, my = round(SAFE_MARGIN * width), round(SAFE_MARGIN * height)
    return mx, my, width - mx, height - my


def _part(safe: Box, x0: float, y0: float, x1: float, y1: float) -> Box:
    w, h = safe[2] - safe[0], safe[3] - safe[1]
    return (safe[0] + round(x0 * w), safe[1] + round(y0 * h), safe[0] + round(x1 * w), safe[1] + round(y1 * h))


def _caps(unit: float, brand: float, title: float, cta: float, note: float) -> dict[str, tuple[int, int]]:
    """(largest, smallest) font px per role: largest scales with the text area, smallest stays legible."""
    floors = {"brand": 9, "title": 11, "cta": 10, "disclaimer": 8}
    return {role: (max(floors[role], round(share * unit)), floors[role])
            for role, share in zip(ROLES, (brand, title, cta, note), strict=True)}


def layout(width: int, height: int, disclaimer: bool, area: Box | None = None, centred: bool = False,
           title_scale: float = 1.0) -> dict[str, Slot]:
    """Slots inside the text `area` (default: the whole safe zone), by its aspect ratio: a leaderboard's brand,
    title and CTA side by side; a skyscraper's stacked; otherwise title on top and CTA below. `centred` sets
    every line on the area's axis (a poster); `title_scale` enlarges the headline (type-led designs)."""
    safe = area or safe_area(width, height)
    wide, high = safe[2] - safe[0], safe[3] - safe[1]
    ratio, unit = wide / high, math.sqrt(wide * high) / (1 - 2 * SAFE_MARGIN)
    end = 0.74 if disclaimer else 1.0
    if ratio >= 3:
        caps = _caps(unit, 0.05, 0.09 * title_scale, 0.07, 0.04)
        parts = {"brand": ((0, 0, 0.2, 1), "left", "middle", 2), "title": ((0.22, 0, 0.72, end), "left", "middle", 2),
                 "cta": ((0.75, 0.1, 1, 0.9), "right", "middle", 2),
                 "disclaimer": ((0.22, 0.76, 0.72, 1), "left", "bottom", 1)}
    elif ratio <= 0.6:
        caps = _caps(unit, 0.045, 0.1 * title_scale, 0.05, 0.03)
        parts = {"brand": ((0, 0, 1, 0.08), "center", "top", 1), "title": ((0, 0.12, 1, 0.6), "center", "top", 5),
                 "cta": ((0, 0.66, 1, 0.8), "center", "middle", 2),
                 "disclaimer": ((0, 0.86, 1, 1), "center", "bottom", 4)}
    else:
        caps = _caps(unit, 0.045, 0.1 * title_scale, 0.05, 0.025)
        note = 0.12 if ratio >= 1.2 else 0.17  # a narrow area sets the disclaimer on more lines
        cta_end = 0.98 - note if disclaimer else 1.0
        parts = {"brand": ((0, 0, 0.6 if not centred else 1, 0.12), "left", "top", 1),
                 "title": ((0, 0.15, 1, 0.62 - (note - 0.12)), "left", "middle" if centred else "top", 3),
                 "cta": ((0.15 if centred else 0, 0.66 - (note - 0.12), 0.85 if centred else 0.62 if ratio >= 1.2
                          else 1, cta_end), "left", "middle", 2),
                 "disclaimer": ((0, 1 - note, 1, 1), "left", "bottom", 3)}
    if centred:
        parts = {role: (frac, "center", valign, lines) for role, (frac, _, valign, lines) in parts.items()}
    pad = round(0.008 * math.sqrt(width * height)) + 1
    return {role: Slot(_inset(_part(safe, *frac), align, pad if role == "cta" else 0), align, valign, lines,
                       *caps[role], pad, truncate=role in ("title", "brand"))
            for role, (frac, align, valign, lines) in parts.items() if disclaimer or role != "disclaimer"}


@dataclass(frozen=True)
class Stage:
    """A design's backdrop for one size and where its text goes."""

    backdrop: Image.Image
    area: Box  # the text's area, inside the safe zone
    centred: bool = False
    title_scale: float = 1.0


def _inset(box: Box, align: str, pad: int) -> Box:
    """The CTA slot moved in by the text padding, so the button's edge lines up with the text beside it."""
    x0, y0, x1, y1 = box
    return (x0 + pad, y0, x1, y1) if align == "left" else (x0, y0, x1 - pad, y1) if align == "right" else box


@lru_cache(maxsize=1)
def _missing_glyph() -> bytes:
    """The banner font's drawing of a code point no font has (U+0378 is unassigned): its 'missing' box."""
    return bytes(load_font(20).getmask("\u0378"))


@lru_cache(maxsize=4096)
def _printable(char: str) -> bool:
    return char.isspace() or (char != "\ufffd" and bytes(load_font(20).getmask(char)) != _missing_glyph())


def unprintable(text: str) -> list[str]:
    """The characters of `text` the banner font has no glyph for (drawn as empty boxes), and U+FFFD, the mark
    of text that was decoded wrongly: copy with any of them is rejected before it reaches a banner."""
    return [c for c in dict.fromkeys(text) if not _printable(c)]


def text_width(font: ImageFont.FreeTypeFont, text: str) -> int:
    """Inked width including a left overhang (a 'J' can start left of its origin)."""
    left, _, right, _ = font.getbbox(text, anchor="la")
    return int(right - min(left, 0))


def wrap(text: str, font: ImageFont.FreeTypeFont, width: int) -> list[str]:
    """Greedy word wrap to `width` pixels. Words are never split: a word wider than the line stays whole on a
    line of its own (too wide), and the fitting below tries a smaller size or cuts the text before it."""
    lines, current = [], ""
    for word in text.split():
        trial = f"{current} {word}".strip()
        if current and text_width(font, trial) > width:
            lines.append(current)
            current = word
        else:
            current = trial
    return lines + [current] if current else lines


@dataclass(frozen=True)
class Fitted:
    """Text set in a font: its lines and the size of the text block (without padding)."""

    font: ImageFont.FreeTypeFont
    size: int
    lines: tuple[str, ...]
    line_height: int
    gap: int
    pad: tuple[int, int]

    @property
    def width(self) -> int:
        return max(text_width(self.font, line) for line in self.lines)

    @property
    def height(self) -> int:
        return len(self.lines) * self.line_height + (len(self.lines) - 1) * self.gap


def _set(text: str, size: int, role: str, slot: Slot) -> tuple[Fitted, int, int]:
    """Text wrapped at one size, with the width and height it may use inside the slot."""
    font = load_font(size)
    ascent, descent = font.getmetrics()
    pad = (round(0.8 * size), round(0.45 * size)) if role == "cta" else (slot.pad, slot.pad)
    room_w = slot.box[2] - slot.box[0] - 2 * pad[0]
    room_h = slot.box[3] - slot.box[1] - 2 * pad[1]
    lines = tuple(wrap(text, font, max(room_w, 1)))
    return Fitted(font, size, lines, ascent + descent, round(0.12 * size), pad), room_w, room_h


def _fits(fitted: Fitted, slot: Slot, room_w: int, room_h: int) -> bool:
    return len(fitted.lines) <= slot.max_lines and fitted.height <= room_h and fitted.width <= room_w


def _ellipsize(fitted: Fitted, max_lines: int, room_w: int, room_h: int) -> Fitted | None:
    """The whole words that fit in the lines there is room for, the last one ending in an ellipsis ("A story
    of love…", never "A story of lo…"); None when not even the first word fits."""
    rows = (room_h + fitted.gap) // (fitted.line_height + fitted.gap)
    words = " ".join(fitted.lines).split()
    for count in range(len(words) - 1, 0, -1):
        lines = wrap(" ".join(words[:count]).rstrip(",;:—–-") + "…", fitted.font, room_w)
        if len(lines) <= min(max_lines, rows) and all(text_width(fitted.font, line) <= room_w for line in lines):
            return Fitted(fitted.font, fitted.size, tuple(lines), fitted.line_height, fitted.gap, fitted.pad)
    return None


def fit_text(text: str, role: str, slot: Slot, size_label: str = "") -> Fitted:
    """The largest size at which the text fits the slot in at most `max_lines` lines, words whole; below the
    smallest legible size a title is cut after its last whole word that fits, with an ellipsis, while a call to
    action or a disclaimer (legal text) is never cut: it is refused."""
    for size in [*range(slot.max_px, slot.min_px, -max(1, slot.max_px // 16)), slot.min_px]:
        fitted, room_w, room_h = _set(text, size, role, slot)
        if _fits(fitted, slot, room_w, room_h):
            return fitted
    cut = _ellipsize(fitted, slot.max_lines, room_w, room_h) if slot.truncate else None
    if cut is None:
        raise ValueError(f"The {role} '{text}' does not fit the {size_label} banner at {slot.min_px} px; shorten it")
    return cut


@dataclass(frozen=True)
class TextBlock:
    """One typeset piece of text: where it is, how it is set, and the contrast measured behind it."""

    role: str
    lines: tuple[str, ...]
    box: Box  # the block with its padding (and its plate or button, if any)
    ink_box: Box  # where the glyphs are
    font_px: int
    colour: RGB
    plate: RGB | None  # the plate or button colour behind the text
    plate_opacity: float
    contrast: float  # measured against the pixels behind the ink box
    required: float


@dataclass
class Banner:
    """One composed banner at one size, with what was measured on it."""

    size: str
    image: Image.Image
    backdrop: Image.Image  # the art with plates and buttons, before the text: what the text is read against
    blocks: dict[str, TextBlock]
    palette: RGB  # mean colour of the backdrop
    mood: str | None
    design: str = "full-bleed"  # one of `DESIGNS`

    @property
    def contrast(self) -> float:
        """The weakest text contrast on the banner: legibility is limited by the hardest-to-read text."""
        return min(block.contrast for block in self.blocks.values())

    @property
    def boxes(self) -> dict[str, Box]:
        return {role: block.box for role, block in self.blocks.items()}

    def features(self) -> dict:
        """The `banner` fields of a creative, as the audience model reads them."""
        return {"palette": list(self.palette), "mood": self.mood, "contrast": round(self.contrast, 2)}


def _corner(slot: Slot, width: int, height: int) -> tuple[int, int]:
    """Top-left corner of a `width` x `height` block aligned inside its slot as the slot says."""
    x0, y0, x1, y1 = slot.box
    x = {"left": x0, "center": x0 + (x1 - x0 - width) // 2, "right": x1 - width}[slot.align]
    y = {"top": y0, "middle": y0 + (y1 - y0 - height) // 2, "bottom": y1 - height}[slot.valign]
    return x, y


def _place(fitted: Fitted, slot: Slot) -> tuple[Box, Box]:
    """(padded box, ink box) of a fitted block aligned inside its slot."""
    outer_w, outer_h = fitted.width + 2 * fitted.pad[0], fitted.height + 2 * fitted.pad[1]
    x, y = _corner(slot, outer_w, outer_h)
    box = (x, y, x + outer_w, y + outer_h)
    ink = (x + fitted.pad[0], y + fitted.pad[1], box[2] - fitted.pad[0], box[3] - fitted.pad[1])
    return box, ink


def _pixels(image: Image.Image, box: Box) -> np.ndarray:
    return np.asarray(image.crop(box).convert("RGB"))


def _with_plate(backdrop: Image.Image, box: Box, colour: RGB, opacity: float, radius: int) -> Image.Image:
    """The backdrop region under `box` with a rounded plate of `colour` laid over it."""
    region = backdrop.crop(box).convert("RGBA")
    layer = Image.new("RGBA", region.size, (0, 0, 0, 0))
    ImageDraw.Draw(layer).rounded_rectangle((0, 0, region.width - 1, region.height - 1), radius,
                                            fill=(*colour, round(255 * opacity)))
    return Image.alpha_composite(region, layer).convert("RGB")


def _inner(ink: Box, box: Box) -> Box:
    return ink[0] - box[0], ink[1] - box[1], ink[2] - box[0], ink[3] - box[1]


def _by_contrast(pixels: np.ndarray, colours: tuple[RGB, ...]) -> list[RGB]:
    return sorted(colours, key=lambda c: -worst_contrast(c, pixels))


def _legible(backdrop: Image.Image, box: Box, ink: Box, preferred: tuple[RGB, ...],
             required: float, radius: int) -> tuple[RGB, RGB | None, float]:
    """A text colour that reaches `required` on the pixels behind the ink; a plate (drawn on the backdrop)
    when neither light nor dark text does on the bare art."""
    pixels = _pixels(backdrop, ink)
    for colour in (*preferred, *_by_contrast(pixels, (LIGHT, DARK))):
        if worst_contrast(colour, pixels) >= required:
            return colour, None, 0.0
    text = _by_contrast(pixels, (LIGHT, DARK))[0]
    plate = DARK if text == LIGHT else LIGHT
    for opacity in PLATE_OPACITY:
        region = _with_plate(backdrop, box, plate, opacity, radius)
        if worst_contrast(text, np.asarray(region.crop(_inner(ink, box)))) >= required or opacity == 1.0:
            backdrop.paste(region, box[:2])
            return text, plate, opacity
    raise AssertionError("unreachable: an opaque plate always passes")


def _button(backdrop: Image.Image, box: Box, ink: Box, fill: RGB, radius: int) -> RGB:
    """Draw the CTA button and return the text colour that reads best on it (one of light/dark always passes AA)."""
    backdrop.paste(_with_plate(backdrop, box, fill, 1.0, radius), box[:2])
    return _by_contrast(_pixels(backdrop, ink), (LIGHT, DARK))[0]


def _draw_lines(draw: ImageDraw.ImageDraw, fitted: Fitted, ink: Box, align: str, colour: RGB) -> None:
    for i, line in enumerate(fitted.lines):
        width = text_width(fitted.font, line)
        left = min(fitted.font.getbbox(line, anchor="la")[0], 0)
        offset = {"left": 0, "center": (ink[2] - ink[0] - width) // 2, "right": ink[2] - ink[0] - width}[align]
        draw.text((ink[0] + offset - left, ink[1] + i * (fitted.line_height + fitted.gap)), line, font=fitted.font,
                  fill=colour, anchor="la")


@dataclass(frozen=True)
class _Planned:
    role: str
    fitted: Fitted
    slot: Slot
    box: Box
    ink: Box


def _plan(texts: dict[str, str], width: int, height: int, stage: Stage) -> list[_Planned]:
    slots = layout(width, height, bool(texts.get("disclaimer")), stage.area, stage.centred, stage.title_scale)
    planned = []
    for role, slot in slots.items():
        fitted = fit_text(texts[role], role, slot, f"{width}x{height}")
        planned.append(_Planned(role, fitted, slot, *_place(fitted, slot)))
    return planned


def _paste_logo(backdrop: Image.Image, logo: Image.Image, slot: Slot) -> None:
    """The logo scaled to fit the brand's slot whole (never stretched or cropped), aligned as the name would be,
    its transparency kept."""
    x0, y0, x1, y1 = slot.box
    scale = min((x1 - x0) / logo.width, (y1 - y0) / logo.height)
    size = (max(1, int(logo.width * scale)), max(1, int(logo.height * scale)))
    fitted = logo.resize(size, Image.Resampling.LANCZOS)
    backdrop.paste(fitted, _corner(slot, *size), fitted)


def compose_banner(stage: Stage, texts: dict[str, str], kit: BrandKit, mood: str | None = None,
                   design: str = "full-bleed") -> Banner:
    """Typeset brand (or its logo), title, CTA and disclaimer on a design's `stage` (`generation.designs`): its
    backdrop at the banner's exact size and the area its text goes in."""
    backdrop = stage.backdrop
    width, height = backdrop.size
    palette = tuple(int(round(v)) for v in np.asarray(backdrop).reshape(-1, 3).mean(axis=0))
    plan = _plan(texts, width, height, stage)
    if (logo := pictures.load(kit.logo)) is not None:  # the logo takes the brand mark's place
        brand = next(p for p in plan if p.role == "brand")
        _paste_logo(backdrop, logo, brand.slot)
        plan = [p for p in plan if p.role != "brand"]
    colours: dict[str, tuple[RGB, RGB | None, float]] = {}
    for p in plan:
        radius = max(2, min(p.fitted.pad))  # corners stay outside the ink box
        if p.role == "cta":
            accent = hex_to_rgb(kit.accent)
            colours[p.role] = (_button(backdrop, p.box, p.ink, accent, radius), accent, 1.0)
        else:
            preferred = (hex_to_rgb(kit.primary),) if p.role == "brand" else ()
            colours[p.role] = _legible(backdrop, p.box, p.ink, preferred, required_contrast(p.fitted.size), radius)
    image = backdrop.copy()
    draw = ImageDraw.Draw(image)
    blocks = {}
    for p in plan:
        colour, plate, opacity = colours[p.role]
        _draw_lines(draw, p.fitted, p.ink, p.slot.align, colour)
        blocks[p.role] = TextBlock(p.role, p.fitted.lines, p.box, p.ink, p.fitted.size, colour, plate, opacity,
                                   worst_contrast(colour, _pixels(backdrop, p.ink)), required_contrast(p.fitted.size))
    return Banner(f"{width}x{height}", image, backdrop, blocks, palette, mood, design)


def banner_texts(title: str, cta: str, kit: BrandKit) -> dict[str, str]:
    """The cleaned text of each role; copy is untrusted (LLM output, catalog titles)."""
    texts = {"brand": kit.name, "title": clean(title, 160), "cta": clean(cta, 40),
             "disclaimer": kit.required_disclaimer}
    for role in ("title", "cta"):
        if not texts[role]:
            raise ValueError(f"The banner's {role} is empty")
    return texts


def safe_stem(stem: str) -> str:
    """A file-name stem with no path in it: letters, digits, '-' and '_' only ('../../etc/passwd' -> 'etc-passwd')."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", str(stem)).strip("-_")[:80] or "banner"


def save_banners(banners: Mapping[str, Banner], folder: str | Path, stem: str) -> dict[str, str]:
    """Write each banner as `<stem>-<size>.png` inside `folder`; returns size -> path."""
    root = Path(folder).resolve()
    root.mkdir(parents=True, exist_ok=True)
    name = safe_stem(stem)
    paths = {}
    for size, banner in banners.items():
        path = (root / f"{name}-{safe_stem(size)}.png").resolve()
        if path.parent != root:
            raise ValueError(f"Refusing to write outside {root}: {path}")
        banner.image.save(path, format="PNG", compress_level=PNG_COMPRESSION)
        paths[size] = str(path)
    return paths
