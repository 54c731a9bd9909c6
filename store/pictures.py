"""Pictures a person points us at (an item's image, a brand's logo): checked once when they are named, loaded
when a banner is drawn. One owner for what counts as a usable picture, for the CSV import and the brand kit.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from PIL import Image, UnidentifiedImageError

TYPES = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
MAX_BYTES = 20 * 1024 * 1024
SIDES = (32, 10_000)  # pixels: smaller is no picture, larger is no product shot or logo


def problem(path: Path) -> str | None:
    """Why the file at `path` cannot be used as a picture, or None: it must be a PNG, JPEG or WebP image of
    sensible size that opens whole and is what its name says."""
    if not path.is_file():
        return f"'{path}' is not a file"
    if path.suffix.lower() not in TYPES:
        return f"'{path.name}' is not a .png, .jpg or .webp image"
    if path.stat().st_size > MAX_BYTES:
        return f"'{path.name}' is larger than {MAX_BYTES // 2**20} MB"
    try:
        with Image.open(path) as image:
            kind, size = image.format, image.size
            image.verify()
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        return f"'{path.name}' does not open as an image ({exc})"
    if kind != TYPES[path.suffix.lower()]:
        return f"'{path.name}' holds a {kind} image, not what its name says"
    if not all(SIDES[0] <= side <= SIDES[1] for side in size):
        return f"'{path.name}' is {size[0]}x{size[1]} pixels; each side must be {SIDES[0]}-{SIDES[1]}"
    return None


def load(path: object) -> Image.Image | None:
    """The picture at `path` (RGBA, transparency kept), or None when there is none or the file has gone since it
    was checked: what it would have shown is then drawn without it."""
    if not isinstance(path, str) or not path:  # a catalog without pictures reads back None or NaN
        return None
    try:
        return _load(path, Path(path).stat().st_mtime_ns).copy()
    except OSError:
        return None


@lru_cache(maxsize=64)
def _load(path: str, mtime: int) -> Image.Image:
    """Decoded once per file version: every banner of a request draws the same logo or item picture."""
    with Image.open(path) as image:
        return image.convert("RGBA")
