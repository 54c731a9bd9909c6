"""Shared fixtures: every test session gets its own store; real models are cached across sessions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MODEL_CACHE = REPO / "var" / "models"


@pytest.fixture(scope="session", autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Point the store and settings file at a temporary folder; keep the converted model cache shared."""
    home = tmp_path_factory.mktemp("adloop-home")
    import settings

    saved = {k: os.environ.get(k) for k in ("ADLOOP_HOME", *settings.ENV_VARS.values())}
    for key in saved:
        os.environ.pop(key, None)
    os.environ["ADLOOP_HOME"] = str(home)
    os.environ["ADLOOP_MODEL_CACHE"] = str(MODEL_CACHE)
    yield home
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def demo_store(isolated_home: Path) -> str:
    """The session store with MovieLens-100k loaded; returns the dataset name."""
    import services

    services.ensure_demo_data()
    return services.DEFAULT_DATASET


@pytest.fixture
def empty_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A brand-new SQLite database for this test only; returns its URL."""
    url = f"sqlite:///{tmp_path / 'test.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    return url


@pytest.fixture(scope="session")
def embedded_model_dir() -> Path:
    """The embedded SmolLM2 converted to safetensors (once; later sessions reuse the cache)."""
    from generation.models import embedded_text_model_folder

    return embedded_text_model_folder(MODEL_CACHE)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, embedded_model_dir: Path) -> Path:
    """A tiny randomly initialised Llama with the SmolLM2 tokenizer, saved as a local model folder.

    It loads in milliseconds and proves code paths (batching, chat templates, fallbacks); its
    output is noise, so tests on it assert structure, never wording.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def tiny_llm(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Configure the tiny model as the text model for this test; returns its id (the folder)."""
    monkeypatch.setenv("ADLOOP_TEXT_MODEL", str(tiny_model_dir))
    return str(tiny_model_dir)
