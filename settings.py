"""Configuration: where data lives, which models and device to use.

Every setting is resolved in the same order so that a deployment can change models, device and
database by configuration alone: an environment variable wins, then the settings file
(`$ADLOOP_HOME/settings.json`, written by the Settings page), then the default. The defaults run
offline on a laptop CPU with the embedded models.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent

EMBEDDED_TEXT_MODEL = "embedded:smollm2-135m-instruct"
EMBEDDED_EMBEDDING_MODEL = "embedded:all-minilm-l6-v2"

# setting name -> environment variable that overrides it
ENV_VARS = {
    "database_url": "DATABASE_URL",
    "text_model": "ADLOOP_TEXT_MODEL",
    "embedding_model": "ADLOOP_EMBEDDING_MODEL",
    "device": "ADLOOP_DEVICE",
    "model_cache": "ADLOOP_MODEL_CACHE",
    "image_model": "ADLOOP_IMAGE_MODEL",
    "brand_kit": "ADLOOP_BRAND_KIT",
    "text_adapter": "ADLOOP_TEXT_ADAPTER",
    "image_adapter": "ADLOOP_IMAGE_ADAPTER",
    "brief_writer": "ADLOOP_BRIEF_WRITER",
    "brief_adapter": "ADLOOP_BRIEF_ADAPTER",
    "engine": "ADLOOP_ENGINE",
}
ENGINES = ("auto", "llama.cpp", "transformers")  # who runs text generation: see generation.engine
BRIEF_WRITERS = ("rules", "llm")  # who writes a banner's art direction: `generation.brief` or the text model


DEVICE_PATTERN = re.compile(r"auto|(cpu|cuda|mps|xpu)(:[0-9]+)?")
MAX_VALUE_CHARS = 4096


class ConfigError(ValueError):
    """A setting cannot be used; the message names the setting and where its value came from."""


def home() -> Path:
    """The folder for the database, settings file and runs (`ADLOOP_HOME`, default `./var`)."""
    return Path(os.environ.get("ADLOOP_HOME", REPO_ROOT / "var")).resolve()


def settings_file() -> Path:
    return home() / "settings.json"


@dataclass(frozen=True)
class Settings:
    """The resolved configuration; `sources` says where each value came from."""

    database_url: str
    text_model: str
    embedding_model: str
    device: str
    model_cache: str
    image_model: str
    brand_kit: str
    text_adapter: str
    image_adapter: str
    brief_writer: str
    brief_adapter: str
    engine: str
    sources: dict[str, str]

    def public(self) -> dict[str, str]:
        """The settings without secrets, for display (a database password is masked)."""
        values = {k: v for k, v in asdict(self).items() if k != "sources"}
        values["database_url"] = mask_password(self.database_url)
        return values


def defaults() -> dict[str, str]:
    return {
        "database_url": f"sqlite:///{home() / 'adloop.db'}",
        "text_model": EMBEDDED_TEXT_MODEL,
        "embedding_model": EMBEDDED_EMBEDDING_MODEL,
        "device": "auto",
        "model_cache": str(REPO_ROOT / "var" / "models"),
        "image_model": "procedural",
        "brand_kit": str(REPO_ROOT / "assets" / "brand_kit.json"),
        "text_adapter": "",  # a promoted LoRA adapter folder; empty: the base model
        "image_adapter": "",  # a promoted diffusers LoRA folder for the image model; empty: the base model
        "brief_writer": "rules",
        "brief_adapter": "",  # a LoRA folder for the text model when it writes briefs; empty: the base model
        "engine": "auto",  # llama.cpp on the CPU, transformers on CUDA/MPS
    }


def read_settings_file() -> dict[str, str]:
    """The saved settings; a malformed file is reported, never silently ignored."""
    path = settings_file()
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"Settings file {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"Settings file {path} must hold a JSON object")
    known = {f.name for f in fields(Settings)} - {"sources"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"Settings file {path} has unknown keys: {', '.join(unknown)}")
    return {k: check_value(k, v, f"settings file {path}") for k, v in data.items()}


def check_value(key: str, value: object, source: str) -> str:
    """The value if `key` can take it; else ConfigError naming the key and `source`.

    Checked where values enter (file, environment, Settings page) so that a typo such as device 'gpu'
    is reported there, not as a stack trace from torch at the first model load.
    """
    if not isinstance(value, str):
        found = "null" if value is None else {bool: "true/false", dict: "an object", list: "a list"}.get(
            type(value), "a number")
        raise ConfigError(f"Setting '{key}' in {source} must be a string (found {found})")
    if len(value) > MAX_VALUE_CHARS or any(ord(c) < 32 for c in value):
        raise ConfigError(f"Setting '{key}' in {source} is over {MAX_VALUE_CHARS} characters or has control "
                          f"characters")
    if key == "device" and value.strip() and not DEVICE_PATTERN.fullmatch(value.strip()):
        raise ConfigError(f"Setting 'device' in {source} is '{value}'; use auto, cpu, cuda, cuda:N, mps or xpu")
    if key == "engine" and value.strip() and value.strip() not in ENGINES:
        raise ConfigError(f"Setting 'engine' in {source} is '{value}'; use {', '.join(ENGINES)}")
    if key == "brief_writer" and value.strip() and value.strip() not in BRIEF_WRITERS:
        raise ConfigError(f"Setting 'brief_writer' in {source} is '{value}'; use {' or '.join(BRIEF_WRITERS)}")
    return value


def load() -> Settings:
    """Resolve every setting: environment, then settings file, then default."""
    values, sources = defaults(), dict.fromkeys(ENV_VARS, "default")
    for key, value in read_settings_file().items():
        values[key], sources[key] = value, "settings file"
    for key, var in ENV_VARS.items():
        if os.environ.get(var):
            values[key], sources[key] = check_value(key, os.environ[var], f"${var}"), f"${var}"
    return Settings(**values, sources=sources)


def save(changes: dict[str, str]) -> Path:
    """Write settings to the settings file (values equal to the default are dropped)."""
    known = set(ENV_VARS)
    bad = sorted(set(changes) - known)
    if bad:
        raise ValueError(f"Unknown settings: {', '.join(bad)}")
    current = read_settings_file()
    current.update({k: check_value(k, v, "the saved settings").strip() for k, v in changes.items()})
    base = defaults()
    current = {k: v for k, v in current.items() if v and v != base.get(k)}
    path = settings_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(current, indent=2, sort_keys=True), encoding="utf-8")
    tmp.replace(path)
    return path


def mask_password(url: str) -> str:
    """Hide the password part of a database URL such as postgresql://user:pw@host/db."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    if ":" in creds:
        creds = creds.split(":", 1)[0] + ":***"
    return f"{scheme}://{creds}@{host}"
