"""Banner designs: six ways to stage a variant's art, the item's picture and its text, and the choice of one per
variant and brief. A design builds the backdrop of each size and says where the text goes (`compose.Stage`);
the composer (`generation.compose`) typesets on it. Every design keeps the text inside the 6 % safe zone and
shows pictures cut to fit, never stretched.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

from generation.brief import Brief, hex_to_rgb
from generation.compose import (
    RGB,
    SAFE_MARGIN,
    SIZES,
    Banner,
    Box,
    BrandKit,
    Stage,
    banner_texts,
    compose_banner,
    contrast_ratio,
    relative_luminance,
    safe_area,
)
from generation.render import Renderer, cover


def _solid(size: tuple[int, int], colour: RGB) -> Image.Image:
    return Image.new("RGB", size, colour)


def _panel_colour(art: Image.Image, kit: BrandKit) -> RGB:
    """The colour of a design's flat panel: the brand's primary colour, or, when that is too close to the art's
    mean colour to set it apart, the art's mean colour darkened."""
    primary = hex_to_rgb(kit.primary)
    mean = np.asarray(art.convert("RGB")).reshape(-1, 3).mean(axis=0)
    if float(contrast_ratio(relative_luminance(primary), relative_luminance(mean))) >= 1.5:
        return primary
    return tuple(int(v * 0.35) for v in mean)


def _split(width: int, height: int, share: float) -> tuple[Box, Box]:
    """(picture box, text box) of a banner cut along its long side: the picture takes `share` of it."""
    if width / height > 0.6:
        cut = round(share * width)
        return (0, 0, cut, height), (cut, 0, width, height)
    cut = round(share * height)
    return (0, 0, width, cut), (0, cut, width, height)


def _within_safe(box: Box, width: int, height: int) -> Box:
    """The text box kept inside the safe zone, with the same margin from the picture's edge."""
    safe, mx, my = safe_area(width, height), round(SAFE_MARGIN * width), round(SAFE_MARGIN * height)
    x0 = max(safe[0], box[0] + (mx if box[0] else 0))
    y0 = max(safe[1], box[1] + (my if box[1] else 0))
    return x0, y0, min(safe[2], box[2]), min(safe[3], box[3])


def _stage_split(art: Image.Image, kit: BrandKit, picture: Image.Image | None) -> Stage:
    """Picture (or art) edge to edge on one side, the text on a flat panel on the other."""
    width, height = art.size
    shown, text = _split(width, height, 0.28 if width / height >= 3 else 0.4)
    backdrop = _solid(art.size, _panel_colour(art, kit))
    backdrop.paste(cover(picture or art, shown[2] - shown[0], shown[3] - shown[1]), shown[:2])
    return Stage(backdrop, _within_safe(text, width, height))


def product_card(width: int, height: int) -> tuple[Box, Box, int]:
    """(card, text area, border) of the product-left design at one size: the card at the start of the long side,
    inside the margins; the picture fills the card within its border."""
    card, text = _split(width, height, 0.3 if width / height >= 3 else 0.38)
    mx, my = round(SAFE_MARGIN * width), round(SAFE_MARGIN * height)
    border = max(2, round(0.012 * math.sqrt(width * height)))
    return (card[0] + mx, card[1] + my, card[2] - mx, card[3] - my), _within_safe(text, width, height), border


def _stage_product(art: Image.Image, kit: BrandKit, picture: Image.Image | None) -> Stage:
    """The art as the ground, the picture (or the art's centre) on a card at the start, the text beside it."""
    card, text, border = product_card(*art.size)
    backdrop = art.convert("RGB").copy()
    ImageDraw.Draw(backdrop).rectangle(card, fill=hex_to_rgb(kit.accent))
    framed = (card[0] + border, card[1] + border, card[2] - border, card[3] - border)
    backdrop.paste(cover(picture or art, framed[2] - framed[0], framed[3] - framed[1]), framed[:2])
    return Stage(backdrop, text)


def _stage_framed(art: Image.Image, kit: BrandKit, picture: Image.Image | None) -> Stage:
    """The picture (or art) inside a frame of the brand's colour, the text over it in the safe zone."""
    width, height = art.size
    frame = max(3, round(0.03 * min(width, height)))
    backdrop = _solid(art.size, hex_to_rgb(kit.primary))
    backdrop.paste(cover(picture or art, width - 2 * frame, height - 2 * frame), (frame, frame))
    return Stage(backdrop, safe_area(width, height))


def _stage_type(art: Image.Image, kit: BrandKit, picture: Image.Image | None) -> Stage:
    """Type first: a flat ground of the panel colour with the art as a faint texture, a larger headline."""
    return Stage(Image.blend(_solid(art.size, _panel_colour(art, kit)), art.convert("RGB"), 0.18),
                 safe_area(*art.size), title_scale=1.3)


def _stage_poster(art: Image.Image, kit: BrandKit, picture: Image.Image | None) -> Stage:
    """The picture (or art) as a poster, every line centred, a larger headline."""
    return Stage(cover(picture, *art.size) if picture else art.convert("RGB").copy(), safe_area(*art.size),
                 centred=True, title_scale=1.15)


def _stage_full(art: Image.Image, kit: BrandKit, picture: Image.Image | None) -> Stage:
    """The picture (or art) edge to edge, the text over it in the safe zone."""
    return Stage(cover(picture, *art.size) if picture else art.convert("RGB").copy(), safe_area(*art.size))


DESIGNS: dict[str, Callable[[Image.Image, BrandKit, Image.Image | None], Stage]] = {
    "full-bleed": _stage_full, "split": _stage_split, "framed": _stage_framed, "poster": _stage_poster,
    "type-led": _stage_type, "product-left": _stage_product}
# the designs that suit each mood of the art direction, best first; a variant takes one by its seed
MOOD_DESIGNS = {"dark": ("poster", "full-bleed", "framed"), "bright": ("split", "type-led", "product-left"),
                "warm": ("framed", "split", "poster"), "cool": ("split", "product-left", "full-bleed"),
                "dreamy": ("full-bleed", "framed", "poster"), "vintage": ("framed", "type-led", "poster"),
                "bold": ("type-led", "poster", "split"), "calm": ("framed", "split", "full-bleed")}
PICTURE_DESIGNS = ("product-left", "split", "framed")  # where an item's own picture shows best


def choose_design(mood: str | None, seed: int, picture: bool = False) -> str:
    """The design of one variant's banners: one of those that suit its brief's mood, by the variant's seed; with
    the item's own picture, one of the designs that show it."""
    options = PICTURE_DESIGNS if picture else MOOD_DESIGNS.get(str(mood), tuple(DESIGNS))
    return options[seed % len(options)]


def compose_banners(background_for_size: Callable[[int, int], Image.Image], title: str, cta: str, brand_kit: BrandKit,
                    sizes: tuple[tuple[int, int], ...] = SIZES, *, mood: str | None = None, design: str = "full-bleed",
                    picture: Image.Image | None = None) -> dict[str, Banner]:
    """One banner per size ("300x250" -> Banner) in `design`, each from art made for that size and cover-cropped
    to it; `picture` (the item's own image) is shown where the design has room for it. A size whose text area
    in this design is too small for the copy is set full-bleed instead (its `design` says so)."""
    if design not in DESIGNS:
        raise ValueError(f"Unknown banner design '{design}' (choose from {', '.join(DESIGNS)})")
    texts = banner_texts(title, cta, brand_kit)
    banners = {}
    for w, h in sizes:
        art = cover(background_for_size(w, h), w, h)
        try:
            banners[f"{w}x{h}"] = compose_banner(DESIGNS[design](art, brand_kit, picture), texts, brand_kit, mood,
                                                 design)
        except ValueError:
            if design == "full-bleed":
                raise
            banners[f"{w}x{h}"] = compose_banner(_stage_full(art, brand_kit, picture), texts, brand_kit, mood)
    return banners


def banners_for_brief(renderer: Renderer, brief: Brief, title: str, cta: str, brand_kit: BrandKit, seed: int,
                      sizes: tuple[tuple[int, int], ...] = SIZES, design: str = "full-bleed",
                      picture: Image.Image | None = None) -> dict[str, Banner]:
    """Banners whose art is the brief painted by `renderer`, in `design` (the Studio's: `choose_design`); the
    brief's mood is what the audience reads. A renderer that can inpaint (a diffusers model) paints the scene
    around the item's picture on its product card."""
    paint_around = getattr(renderer, "paint_around", None)
    if picture is not None and design == "product-left" and paint_around is not None:
        def background(w: int, h: int) -> Image.Image:
            return paint_around(brief, picture, product_card(w, h)[0], w, h, seed)
    else:
        def background(w: int, h: int) -> Image.Image:
            return renderer.render(brief, w, h, seed)
    return compose_banners(background, title, cta, brand_kit, sizes, mood=brief.mood, design=design,
                           picture=picture)
