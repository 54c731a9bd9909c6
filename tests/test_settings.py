"""Settings resolution: environment variable, then settings file, then default; saving and masking."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import settings


@pytest.fixture
def settings_path(isolated_home: Path, monkeypatch: pytest.MonkeyPatch):
    """The session's settings file, absent during the test and restored afterwards; no overriding env vars."""
    for var in ("ADLOOP_DEVICE", "ADLOOP_TEXT_MODEL", "ADLOOP_EMBEDDING_MODEL", "DATABASE_URL"):
        monkeypatch.delenv(var, raising=False)
    path = settings.settings_file()
    assert path == isolated_home.resolve() / "settings.json"
    saved = path.read_bytes() if path.exists() else None
    path.unlink(missing_ok=True)
    yield path
    path.unlink(missing_ok=True)
    path.with_suffix(".tmp").unlink(missing_ok=True)
    if saved is not None:
        path.write_bytes(saved)


def test_defaults_when_nothing_is_configured(settings_path: Path, isolated_home: Path):
    cfg = settings.load()
    assert cfg.device == "auto"
    assert cfg.text_model == settings.EMBEDDED_TEXT_MODEL
    assert cfg.embedding_model == settings.EMBEDDED_EMBEDDING_MODEL
    assert cfg.database_url == f"sqlite:///{isolated_home.resolve() / 'adloop.db'}"
    assert cfg.sources["device"] == cfg.sources["text_model"] == cfg.sources["database_url"] == "default"


def test_environment_beats_settings_file_beats_default(settings_path: Path, monkeypatch: pytest.MonkeyPatch):
    assert settings.load().sources["device"] == "default"

    settings.save({"device": "cpu", "text_model": "HuggingFaceTB/SmolLM2-360M-Instruct"})
    cfg = settings.load()
    assert (cfg.device, cfg.sources["device"]) == ("cpu", "settings file")
    assert (cfg.text_model, cfg.sources["text_model"]) == ("HuggingFaceTB/SmolLM2-360M-Instruct", "settings file")

    monkeypatch.setenv("ADLOOP_DEVICE", "cuda")
    cfg = settings.load()
    assert (cfg.device, cfg.sources["device"]) == ("cuda", "$ADLOOP_DEVICE")
    # the other setting still comes from the file
    assert cfg.sources["text_model"] == "settings file"

    # an empty variable does not count as set
    monkeypatch.setenv("ADLOOP_DEVICE", "")
    cfg = settings.load()
    assert (cfg.device, cfg.sources["device"]) == ("cpu", "settings file")

    settings_path.unlink()
    assert (settings.load().device, settings.load().sources["device"]) == ("auto", "default")


def test_save_drops_defaults_and_keeps_earlier_changes(settings_path: Path):
    settings.save({"device": "auto", "text_model": "  some/model  "})
    assert json.loads(settings_path.read_text(encoding="utf-8")) == {"text_model": "some/model"}

    settings.save({"device": "cpu"})
    assert json.loads(settings_path.read_text(encoding="utf-8")) == {"device": "cpu", "text_model": "some/model"}

    # saving the default value (or an empty one) removes the override
    settings.save({"text_model": settings.EMBEDDED_TEXT_MODEL, "device": ""})
    assert json.loads(settings_path.read_text(encoding="utf-8")) == {}
    assert settings.load().sources["device"] == "default"
    assert not settings_path.with_suffix(".tmp").exists()


@pytest.mark.parametrize("key", ["colour", "sources"])
def test_save_rejects_unknown_keys_and_writes_nothing(settings_path: Path, key: str):
    with pytest.raises(ValueError, match=f"Unknown settings: {key}"):
        settings.save({key: "x", "device": "cpu"})
    assert not settings_path.exists()


@pytest.mark.parametrize(("content", "reason"), [
    ("{not json", "is not valid JSON"),
    ('["device", "cpu"]', "must hold a JSON object"),
    ('{"device": "cpu", "gpu_count": 2}', "unknown keys: gpu_count"),
])
def test_malformed_settings_file_is_reported_with_its_path(settings_path: Path, content: str, reason: str):
    settings_path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError) as info:
        settings.load()
    assert str(settings_path) in str(info.value)
    assert reason in str(info.value)
    # saving over a broken file must not silently discard it either
    with pytest.raises(ValueError, match="Settings file"):
        settings.save({"device": "cpu"})
    assert settings_path.read_text(encoding="utf-8") == content


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://adloop:s3cret@db.example:5432/adloop", "postgresql://adloop:***@db.example:5432/adloop"),
    ("postgresql+psycopg://me:p@ss:w0rd@localhost/ads", "postgresql+psycopg://me:***@localhost/ads"),
    ("postgresql://me@localhost/ads", "postgresql://me@localhost/ads"),
    ("sqlite:////tmp/adloop.db", "sqlite:////tmp/adloop.db"),
])
def test_mask_password(url: str, shown: str):
    assert settings.mask_password(url) == shown


def test_public_settings_hide_the_database_password(settings_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://adloop:s3cret@db.example/adloop")
    cfg = settings.load()
    assert cfg.database_url == "postgresql://adloop:s3cret@db.example/adloop"
    assert cfg.sources["database_url"] == "$DATABASE_URL"
    public = cfg.public()
    assert public["database_url"] == "postgresql://adloop:***@db.example/adloop"
    assert "s3cret" not in json.dumps(public)
    assert "sources" not in public


def test_the_settings_page_counts_real_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """"Loaded once" is counted by the loaders, not by the registry: a model dropped and loaded again (or one
    loaded past the registry) shows as loaded twice, under the same line the page lists."""
    from generation import models
    from services.settings import environment

    monkeypatch.setattr(models, "_models", {})
    monkeypatch.setattr(models, "_loads", models.Counter())
    models.embedder()
    [line] = models.loaded()
    assert environment()["model_loads"] == {line: 1}
    models._models.clear()  # dropped: the next call loads it again
    models.embedder()
    assert environment()["model_loads"] == {line: 2}
