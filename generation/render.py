"""Renderers: turn a visual brief into background art at a requested pixel size.

Two renderers share one interface (`Renderer.render(brief, width, height, seed)`):

- `ProceduralRenderer` paints the brief with numpy: palette gradients, shapes chosen by mood and
  composition, texture and grain. It runs offline in milliseconds and draws every size natively,
  so it is the default and the fallback.
- `DiffusersRenderer` runs any text-to-image pipeline that diffusers can load (a hub id or a local
  folder). No such weights ship in any package, so it only works where the user configures a model.
  It generates at the model's native size in one of three aspect buckets and cover-crops to each
  banner size, so the art is never stretched.

Both are deterministic per seed. Backgrounds carry no text; the composer typesets the copy.
"""

from __future__ import annotations

import inspect
import math
import threading
import time
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image, ImageFilter, ImageOps

import settings
from generation import models
from generation.brief import Brief
from generation.models import ModelUnavailable

PROCEDURAL = "procedural"
FOCUS = {"left-weighted": (0.28, 0.5), "right-weighted": (0.72, 0.5), "centered": (0.5, 0.5), "diagonal": (0.3, 0.7)}
SEPIA = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]], dtype=np.float32)


class Renderer(Protocol):
    """Anything that paints a brief as background art of exactly width x height pixels."""

    name: str
    adapter: str | None  # the LoRA folder fused into the model, recorded with what it draws

    def render(self, brief: Brief, width: int, height: int, seed: int) -> Image.Image: ...


class UnsafeArt(RuntimeError):
    """The model's safety checker flagged the generated image; it must not be shown."""


def cover(image: Image.Image, width: int, height: int) -> Image.Image:
    """Scale to cover width x height and crop the centre: fills any banner size without distorting the art."""
    if image.size == (width, height):
        return image.convert("RGB")
    return ImageOps.fit(image.convert("RGB"), (width, height), Image.Resampling.LANCZOS, centering=(0.5, 0.5))


@dataclass(frozen=True)
class Canvas:
    """Pixel coordinates of a canvas; distances are in units of sqrt(width x height) so shapes stay round."""

    width: int
    height: int
    x: np.ndarray  # 1 x width, relative 0..1
    y: np.ndarray  # height x 1, relative 0..1

    @classmethod
    def of(cls, width: int, height: int) -> Canvas:
        x = ((np.arange(width, dtype=np.float32) + 0.5) / width)[None, :]
        y = ((np.arange(height, dtype=np.float32) + 0.5) / height)[:, None]
        return cls(width, height, x, y)

    @property
    def scale(self) -> float:
        return math.sqrt(self.width * self.height)

    def distance(self, cx: float, cy: float) -> np.ndarray:
        return np.hypot((self.x - cx) * self.width, (self.y - cy) * self.height) / self.scale


def _blend(image: np.ndarray, colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = np.clip(alpha, 0, 1)[..., None]
    return image * (1 - a) + colour * a


def _stamp(canvas: Canvas, image: np.ndarray, centre: tuple[float, float], radius: float, colour: np.ndarray,
           alpha: float, soft: bool) -> None:
    """A soft (Gaussian) or hard (anti-aliased) disc, computed only inside its bounding box."""
    reach = radius * canvas.scale * (2.5 if soft else 1.0) + 1
    cx, cy = centre[0] * canvas.width, centre[1] * canvas.height
    x0, x1 = max(int(cx - reach), 0), min(int(cx + reach) + 1, canvas.width)
    y0, y1 = max(int(cy - reach), 0), min(int(cy + reach) + 1, canvas.height)
    if x0 >= x1 or y0 >= y1:
        return
    xs = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5
    ys = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5
    d = np.hypot(xs - cx, ys - cy)
    r = radius * canvas.scale
    coverage = np.exp(-((d / r) ** 2)) if soft else np.clip(r - d + 0.5, 0, 1)
    image[y0:y1, x0:x1] = _blend(image[y0:y1, x0:x1], colour, alpha * coverage)


def _gradient(canvas: Canvas, colours: np.ndarray, composition: str, rng: np.random.Generator) -> np.ndarray:
    """The base wash: darkest colour where the composition puts its weight, fading through the palette."""
    stops = colours[np.argsort(colours @ np.array([0.2126, 0.7152, 0.0722], dtype=np.float32))][:3]
    if composition == "centered":
        t = canvas.distance(0.5, 0.5)
    else:
        angle = {"left-weighted": 0.0, "right-weighted": math.pi, "diagonal": -math.pi / 4}[composition]
        angle += rng.uniform(-0.3, 0.3)
        t = (canvas.x - 0.5) * canvas.width * math.cos(angle) + (canvas.y - 0.5) * canvas.height * math.sin(angle)
    t = np.broadcast_to(t, (canvas.height, canvas.width))
    t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    levels = np.linspace(0, 1, 1024)
    ramp = np.stack([np.interp(levels, np.linspace(0, 1, len(stops)), stops[:, k]) for k in range(3)], axis=-1)
    return ramp.astype(np.float32)[(t * 1023).astype(np.int32)]


def _blobs(canvas: Canvas, image: np.ndarray, colours: np.ndarray, rng: np.random.Generator,
           focus: tuple[float, float], count: int, alpha: float, soft: bool = True,
           size: tuple[float, float] = (0.12, 0.35), spread: float = 0.22) -> None:
    for _ in range(count):
        centre = (focus[0] + rng.normal(0, spread), focus[1] + rng.normal(0, spread))
        _stamp(canvas, image, centre, rng.uniform(*size), colours[rng.integers(len(colours))], alpha, soft)


def _stripes(canvas: Canvas, image: np.ndarray, colours: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Hard diagonal bands with crisp anti-aliased edges: the graphic look of a bold mood."""
    angle = rng.choice([-1, 1]) * rng.uniform(0.5, 1.1)
    across = (canvas.x * canvas.width * math.cos(angle) + canvas.y * canvas.height * math.sin(angle)) / canvas.scale
    lo, hi = float(across.min()), float(across.max())
    for _ in range(int(rng.integers(3, 6))):
        centre, half = rng.uniform(lo, hi), rng.uniform(0.03, 0.12)
        coverage = np.clip((half - np.abs(across - centre)) * canvas.scale + 0.5, 0, 1)
        image = _blend(image, colours[rng.integers(len(colours))], 0.85 * coverage)
    return image


def _ribbons(canvas: Canvas, image: np.ndarray, colours: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Soft sine-shaped ribbons: the flowing, airy look of a cool mood."""
    for _ in range(int(rng.integers(3, 6))):
        base, amp = rng.uniform(0.15, 0.85), rng.uniform(0.05, 0.2)
        centre = base + amp * np.sin(2 * math.pi * (rng.uniform(0.5, 1.5) * canvas.x + rng.uniform(0, 1)))
        gap = (canvas.y - centre) * canvas.height / canvas.scale
        image = _blend(image, colours[rng.integers(len(colours))], 0.5 * np.exp(-((gap / 0.06) ** 2)))
    return image


def _horizons(canvas: Canvas, image: np.ndarray, colours: np.ndarray, rng: np.random.Generator,
              alpha: float = 0.6) -> np.ndarray:
    """Layered low hills from back to front: quiet horizontal structure for calm and warm moods."""
    for k, base in enumerate(sorted(rng.uniform(0.45, 0.85, 3))):
        line = base + rng.uniform(0.02, 0.08) * np.sin(2 * math.pi * (rng.uniform(0.3, 1.2) * canvas.x
                                                                       + rng.uniform(0, 1)))
        coverage = np.clip((canvas.y - line) * canvas.height / 1.5, 0, 1)
        image = _blend(image, colours[(k + 1) % len(colours)], alpha * coverage)
    return image


def _texture(canvas: Canvas, rng: np.random.Generator, cells: float = 6.0) -> np.ndarray:
    """Smooth value noise in -1..1 (a coarse random grid, bicubically upsampled): paper-like texture."""
    grid_w = max(2, int(cells * canvas.width / canvas.scale) + 2)
    grid_h = max(2, int(cells * canvas.height / canvas.scale) + 2)
    grid = Image.fromarray(rng.uniform(0, 255, (grid_h, grid_w)).astype(np.uint8))
    smooth = np.asarray(grid.resize((canvas.width, canvas.height), Image.Resampling.BICUBIC), dtype=np.float32)
    return (smooth / 127.5 - 1)[..., None]


def _vignette(canvas: Canvas, image: np.ndarray, strength: float) -> np.ndarray:
    corner = math.hypot(canvas.width / 2, canvas.height / 2) / canvas.scale
    fall = np.clip(canvas.distance(0.5, 0.5) / corner, 0, 1) ** 2
    return image * (1 - strength * fall)[..., None]


def _grain(image: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    return image + amount * rng.standard_normal(image.shape[:2], dtype=np.float32)[..., None]


def _paint_mood(canvas: Canvas, image: np.ndarray, mood: str, colours: np.ndarray, rng: np.random.Generator,
                focus: tuple[float, float]) -> np.ndarray:
    """Shapes that say the mood: soft haze for dreamy, hard bands for bold, grain and vignette for dark/vintage."""
    if mood in ("dreamy", "bright"):
        _blobs(canvas, image, colours, rng, focus, 9, 0.55 if mood == "dreamy" else 0.45)
    if mood == "bright":
        _blobs(canvas, image, colours, rng, (0.5, 0.5), 24, 0.9, soft=False, size=(0.01, 0.035), spread=0.3)
    if mood == "bold":
        image = _stripes(canvas, image, colours, rng)
    if mood == "cool":
        image = _ribbons(canvas, image, colours, rng)
    if mood in ("calm", "warm"):
        image = _horizons(canvas, image, colours, rng, 0.45 if mood == "calm" else 0.6)
    if mood == "warm":
        _stamp(canvas, image, focus, 0.3, colours.max(axis=0), 0.55, soft=True)
    if mood in ("dark", "vintage"):
        _blobs(canvas, image, colours, rng, focus, 4, 0.35)
    return image


def _finish(canvas: Canvas, image: np.ndarray, mood: str, rng: np.random.Generator) -> np.ndarray:
    """Mood-wide treatment after the shapes: tone curve, sepia, vignette, texture and grain."""
    image = image + 10 * _texture(canvas, rng)
    if mood == "vintage":
        image = 0.45 * image + 0.55 * (image @ SEPIA.T)
    if mood in ("dark", "vintage", "bold"):
        image = _vignette(canvas, image, {"dark": 0.6, "vintage": 0.45, "bold": 0.25}[mood])
    if mood == "dark":
        image = image * 0.8
    if mood in ("bright", "dreamy"):
        image = image * 0.85 + 255 * 0.15
    if mood in ("dark", "vintage"):
        image = _grain(image, rng, 7.0)
    return image


# The procedural art is drawn at most this many pixels and scaled up: its washes, hazes and bands look the
# same, and the 1200x628 and 1080x1080 banners, nine tenths of a request's pixels, draw in a third of the time.
ART_PIXELS = 320_000


class ProceduralRenderer:
    """Offline background art from the brief alone; deterministic in (brief, seed), drawn at any size."""

    name = PROCEDURAL
    adapter = None

    def render(self, brief: Brief, width: int, height: int, seed: int) -> Image.Image:
        """The art at `width` x `height`: drawn at most `ART_PIXELS` large and scaled up bicubically."""
        if width < 1 or height < 1:
            raise ValueError(f"Cannot render {width}x{height}: both sides must be at least 1 pixel")
        scale = min(1.0, math.sqrt(ART_PIXELS / (width * height)))
        drawn = (max(1, round(width * scale)), max(1, round(height * scale)))
        art = self._draw(brief, *drawn, seed)
        return art if drawn == (width, height) else art.resize((width, height), Image.Resampling.BICUBIC)

    def _draw(self, brief: Brief, width: int, height: int, seed: int) -> Image.Image:
        key = zlib.crc32(f"{brief.mood}|{','.join(brief.palette)}|{brief.composition}".encode())
        rng = np.random.default_rng([seed, key])
        canvas = Canvas.of(width, height)
        colours = np.array(brief.rgb, dtype=np.float32)
        focus = FOCUS[brief.composition]
        image = _gradient(canvas, colours, brief.composition, rng)
        image = _paint_mood(canvas, image, brief.mood, colours, rng, focus)
        if brief.mood == "dreamy":
            radius = 0.02 * canvas.scale
            image = np.asarray(Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).filter(
                ImageFilter.GaussianBlur(radius)), dtype=np.float32)
        image = _finish(canvas, image, brief.mood, rng)
        return Image.fromarray(np.clip(image + 0.5, 0, 255).astype(np.uint8), "RGB")


@dataclass
class DiffusionModel:
    """A loaded text-to-image pipeline; `lock` serialises generation since Streamlit serves sessions from threads."""

    model_id: str
    pipeline: object
    device: str
    native: int  # the side of the square the model was trained at, in pixels
    step: int  # generated sides are multiples of this (the latent grid times the UNet's downsampling)
    safety_checker: bool
    load_seconds: float
    adapter: str | None = None  # the diffusers LoRA folder fused into the weights, if any
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


def _native_size(pipeline: object) -> tuple[int, int]:
    """(native side, size step) in pixels, from the pipeline's own configuration."""
    factor = int(getattr(pipeline, "vae_scale_factor", 8) or 8)
    core = getattr(pipeline, "unet", None) or getattr(pipeline, "transformer", None)
    sample = getattr(pipeline, "default_sample_size", None) or getattr(getattr(core, "config", None),
                                                                       "sample_size", None)
    return (int(sample) * factor if sample else 512), factor * 8


def load_diffusion_model(model_id: str, device: str, adapter: str | None = None) -> DiffusionModel:
    """Load any text-to-image pipeline by hub id or local folder; fp16 on CUDA, fp32 elsewhere; with a
    diffusers LoRA (a promoted Diffusion-DPO adapter) fused in if given.

    The pipeline's own safety checker, when the model ships one, is loaded and left on.
    """
    from diffusers import AutoPipelineForText2Image

    started = time.perf_counter()
    dtype = torch.float16 if device == "cuda" else torch.float32
    try:
        pipeline = AutoPipelineForText2Image.from_pretrained(model_id, dtype=dtype)
        pipeline = pipeline.to(device)
    except (OSError, ValueError, ImportError, KeyError) as exc:
        reason = " ".join(str(exc).split())
        raise ModelUnavailable(
            f"Cannot load image model '{model_id}': {reason} No text-to-image weights ship with AdLoop; use "
            f"'{PROCEDURAL}', a local diffusers folder, or a hub id on a machine with a connection.") from exc
    pipeline.set_progress_bar_config(disable=True)
    if adapter:
        _fuse_adapter(pipeline, model_id, adapter)
    native, step = _native_size(pipeline)
    checker = getattr(pipeline, "safety_checker", None) is not None
    return DiffusionModel(model_id, pipeline, device, native, step, checker, time.perf_counter() - started,
                          adapter or None)


def _fuse_adapter(pipeline: object, model_id: str, adapter: str) -> None:
    """Load a diffusers LoRA and fuse it into the weights, so generation runs at the base model's speed.

    A folder that holds no such adapter, or one made for another architecture, is an error: silently drawing
    with the base model would credit the adapter with art it never touched.
    """
    from diffusers.loaders.lora_base import LORA_WEIGHT_NAME_SAFE

    if not (Path(adapter) / LORA_WEIGHT_NAME_SAFE).is_file():
        raise ModelUnavailable(f"No diffusers LoRA adapter in '{adapter}' ({LORA_WEIGHT_NAME_SAFE} is missing)")
    if not hasattr(pipeline, "load_lora_weights"):
        raise ModelUnavailable(f"Image model '{model_id}' does not take LoRA adapters")
    try:
        pipeline.load_lora_weights(adapter)
        pipeline.fuse_lora()
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        reason = " ".join(str(exc).split())
        raise ModelUnavailable(f"Cannot load LoRA adapter '{adapter}' into '{model_id}': {reason}") from exc


def diffusion_model(model_id: str, device: str | None = None) -> DiffusionModel:
    """The pipeline for (model, device, promoted image adapter), loaded once per process through the shared
    model registry; changing the adapter setting loads a new pipeline rather than mutating a shared one."""
    cfg = settings.load()
    device = models.resolve_device(device or cfg.device)
    adapter = cfg.image_adapter
    return models._shared(("image", model_id, device, adapter),
                          lambda: load_diffusion_model(model_id, device, adapter))


def aspect_bucket(width: int, height: int) -> float:
    """One of three generation shapes (2:1, 1:1, 1:2): five banner sizes cost three generations, not five."""
    ratio = width / height
    return 2.0 if ratio >= 1.5 else 0.5 if ratio <= 1 / 1.5 else 1.0


class DiffusersRenderer:
    """Background art from a diffusers text-to-image model, cover-cropped to each banner size."""

    def __init__(self, model_id: str, device: str | None = None, steps: int = 30, guidance: float = 7.0,
                 cache_size: int = 6, model: DiffusionModel | None = None) -> None:
        """`model`: a privately loaded pipeline (a trainer's, which adds its own LoRA), else the shared one."""
        self.model = model or diffusion_model(model_id, device)
        self.name, self.adapter = model_id, self.model.adapter
        self.steps, self.guidance, self.cache_size = int(steps), float(guidance), int(cache_size)
        self._art: OrderedDict[tuple, Image.Image] = OrderedDict()
        self._art_lock = threading.Lock()
        self._inpainting: object | None = None  # the same weights as an inpainting pipeline, made on first use

    def art_size(self, width: int, height: int) -> tuple[int, int]:
        """The generation size for a banner: the model's native area in the banner's aspect bucket."""
        ratio, step = aspect_bucket(width, height), self.model.step
        side = self.model.native
        gen_w = max(step, round(side * math.sqrt(ratio) / step) * step)
        gen_h = max(step, round(side / math.sqrt(ratio) / step) * step)
        return gen_w, gen_h

    def render(self, brief: Brief, width: int, height: int, seed: int) -> Image.Image:
        size = self.art_size(width, height)
        key = (brief, size, seed)
        with self._art_lock:
            art = self._art.get(key)
        if art is None:
            art = self._generate(brief, size, seed)
            with self._art_lock:
                self._art[key] = art
                while len(self._art) > self.cache_size:
                    self._art.popitem(last=False)
        return cover(art, width, height)

    def _generate(self, brief: Brief, size: tuple[int, int], seed: int) -> Image.Image:
        return self._run(self.model.pipeline, brief, seed, width=size[0], height=size[1])

    def _run(self, pipeline: object, brief: Brief, seed: int, **inputs: object) -> Image.Image:
        """One image from `pipeline` for the brief's prompt (and its negative prompt where the pipeline takes
        one); art the model's safety checker flags is refused."""
        options = {"prompt": brief.prompt, "num_inference_steps": self.steps, "guidance_scale": self.guidance,
                   "generator": torch.Generator("cpu").manual_seed(seed), **inputs}
        if "negative_prompt" in inspect.signature(pipeline.__call__).parameters:
            options["negative_prompt"] = brief.negative_prompt
        with self.model.lock, torch.inference_mode():
            output = pipeline(**options)
        if any(getattr(output, "nsfw_content_detected", None) or []):
            raise UnsafeArt(f"The safety checker of '{self.name}' flagged the art for: {brief.subject}")
        return output.images[0].convert("RGB")

    def paint_around(self, brief: Brief, picture: Image.Image, box: tuple[int, int, int, int], width: int,
                     height: int, seed: int) -> Image.Image:
        """Art at `width` x `height` painted around the item's `picture`, which sits in `box` (inpainting, as
        CG4CTR does: the model fills everything but the picture, so the scene is made for it). The design
        places the picture itself on top, sharp; a model that cannot inpaint paints the brief alone."""
        pipeline = self._inpainting_pipeline()
        if pipeline is None:
            return self.render(brief, width, height, seed)
        step, scale = self.model.step, self.model.native / math.sqrt(width * height)
        size = (max(step, round(width * scale / step) * step), max(step, round(height * scale / step) * step))
        sx, sy = size[0] / width, size[1] / height
        inner = (round(box[0] * sx), round(box[1] * sy), round(box[2] * sx), round(box[3] * sy))
        canvas = Image.new("RGB", size, (128, 128, 128))
        canvas.paste(cover(picture, inner[2] - inner[0], inner[3] - inner[1]), inner[:2])
        mask = Image.new("L", size, 255)  # white: paint; black: keep the picture
        mask.paste(0, inner)
        art = self._run(pipeline, brief, seed, image=canvas, mask_image=mask, width=size[0], height=size[1],
                        strength=1.0)
        return art.resize((width, height), Image.Resampling.LANCZOS)

    def _inpainting_pipeline(self) -> object | None:
        """The loaded weights as an inpainting pipeline (diffusers' `from_pipe` shares them, no second copy), or
        None for a model family diffusers has no inpainting pipeline for."""
        from diffusers import AutoPipelineForInpainting

        with self._art_lock:
            if self._inpainting is None:
                try:
                    self._inpainting = AutoPipelineForInpainting.from_pipe(self.model.pipeline)
                    self._inpainting.set_progress_bar_config(disable=True)
                except (ValueError, KeyError, TypeError):
                    self._inpainting = False
            return self._inpainting or None


def renderer_for(name: str, device: str | None = None, **options: float) -> Renderer:
    """'procedural', or a diffusers model id / local folder (loaded now, so a bad name fails here).

    `options` (steps, guidance) tune a diffusers model: a distilled model wants few steps and no guidance.
    """
    name = str(name or "").strip()
    if not name:
        raise ModelUnavailable(f"No image model configured; use '{PROCEDURAL}' or a diffusers model id or folder")
    if name == PROCEDURAL:
        return ProceduralRenderer()
    return DiffusersRenderer(name, device, **options)
