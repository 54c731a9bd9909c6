"""Settings: what is configured and where it came from, problems found before first use, saving changes; and
`prepare`, which loads what a first page view would otherwise wait for.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import settings
from generation import compose, embeddings, models
from services.common import DEFAULT_DATASET, Progress, ensure_demo_data, quiet


def prepare(progress: Progress = quiet) -> dict:
    """Everything a first page view would otherwise wait for: demo data, item embeddings, the text model."""
    started = time.perf_counter()
    progress(0.0, "Loading the demo dataset")
    loaded = ensure_demo_data()
    vectors = embeddings.item_vectors(DEFAULT_DATASET, progress=lambda f, m: progress(0.1 + 0.4 * f, m))
    progress(0.5, f"Loading {settings.load().text_model}")
    llm = models.text_model()
    progress(1.0, "Ready")
    return {"demo_dataset": "loaded now" if loaded else "already loaded", "item_embeddings": len(vectors),
            "text_model": f"{llm.model_id} on {llm.device} ({llm.load_seconds:.1f} s)",
            "seconds": round(time.perf_counter() - started, 1)}


def environment() -> dict:
    """What the Settings page shows: resolved settings with their sources, device and loaded models."""
    cfg = settings.load()
    return {"settings": cfg.public(), "sources": cfg.sources, "env_vars": settings.ENV_VARS,
            "device": models.resolve_device(cfg.device), "settings_file": str(settings.settings_file()),
            "loaded_models": models.loaded(), "model_loads": models.load_counts(), "problems": config_problems()}


BRAND_KIT_FILE = "brand_kit.json"  # where the dashboard's brand-kit editor saves, beside the settings file


def save_brand_kit(data: dict) -> str:
    """Validate a brand kit (every problem names its key) and save it beside the settings file, then point the
    `brand_kit` setting at it; the next generation uses it. Nothing is written when it does not validate, and
    the file is replaced whole, never left half-written."""
    compose.parse_brand_kit(data, "Brand kit")
    path = settings.settings_file().with_name(BRAND_KIT_FILE)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)
    settings.save({"brand_kit": str(path)})
    return str(path)


def config_problems() -> list[str]:
    """Settings that will fail at first use (a broken brand kit, a model folder that is not there), found now so
    the Settings page can name them before the Studio or a run trips over them."""
    cfg = settings.load()
    problems = []
    try:
        compose.load_brand_kit(cfg.brand_kit)
    except ValueError as exc:
        problems.append(f"brand_kit ({cfg.sources['brand_kit']}): {exc}")
    for key in ("text_model", "embedding_model", "image_model", "text_adapter", "image_adapter", "brief_adapter"):
        value = str(getattr(cfg, key, "") or "")
        if value.startswith(("/", "./", "../", "~")) and not Path(value).expanduser().exists():
            problems.append(f"{key} ({cfg.sources[key]}): the folder {value} does not exist")
    return problems


def save_settings(changes: dict[str, str]) -> str:
    """Persist settings to the settings file; they apply to the next model load. A brand kit that does not load
    is refused here, naming the file and the key, rather than at the next generation."""
    kit = changes.get("brand_kit")
    if isinstance(kit, str) and kit.strip() and kit.strip() != settings.load().brand_kit:
        compose.load_brand_kit(kit.strip())
    return str(settings.save(changes))
