"""llama.cpp as the CPU inference engine: many sequences decoded together, prompts prefilled once.

Chosen by measurement (`bench/generation.py`, README): on this project's 2-core CPU, 8 Studio prompts
took 9.3 s with transformers fp32 `generate`, 6.6 s with CTranslate2 int8 and 2.2 s in llama.cpp (Q8_0)
decoding the 8 sequences as one batch. The engine does the model work and the sampling (its own sampler
chain: temperature, nucleus, seeded draw); this module only tells it which tokens belong to which
sequence, as llama.cpp's own batched and parallel examples do:

- the prompts' common prefix (the system rules and the worked example, the same for every request) is
  kept in the cache of sequence 0 between calls, so a request prefills only what is new;
- each distinct prompt is prefilled once, and its `copies` samples share that cache (llama.cpp's unified
  cache shares the cells instead of copying them), so K candidates per slot cost K answers, not K prompts;
- a sequence stops after `stop_lines` line breaks or at the first sentence end of its last line (`Ends`;
  before then it may not end), or at its end-of-sequence token when there is no such limit; finished
  sequences leave the batch;
- an answer never takes an avoided token (a logit bias in its sampler chain), the last piece of an avoided
  word it has begun (`Avoided`), nor one that would repeat a run of its own tokens (their logits set to minus
  infinity before sampling);
- an answer writes only the numbers its prompt allows (`Numbers`): a digit that starts or continues any
  other number gets no chance, and a number begun is finished as one of the allowed ones;
- an answer with a line rule writes its second line's label as told (`Ends.forced`) and each content word
  once per line (`Ends.said`).

Token ids come from the transformers tokenizer of the same model, so prompts, answers and the token ids
that training and KL use are identical on both paths.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.util
import os
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

CONTEXT = 8192  # cache cells shared by all sequences of a call
MAX_SEQUENCES = 64  # sequences per decode (sequence 0 holds the common prefix)
KERNELS = "AVX2"  # the CPU kernels llama.cpp runs on, set when it loads
BATCH_TOKENS = CONTEXT  # one decode takes a whole call's prefill, so every logits index stays valid


def repeating_tokens(tokens: list[int], n: int) -> list[int]:
    """The tokens that would end a run of `n` tokens the answer has already written (0: none): what both
    engines keep an answer from taking next, so a small model cannot loop ("a film about a film about")."""
    if n <= 0 or len(tokens) < n:
        return []
    tail = tokens[len(tokens) - n + 1:]
    return [tokens[k + n - 1] for k in range(len(tokens) - n + 1) if tokens[k:k + n - 1] == tail]


@dataclass(frozen=True)
class Avoided:
    """The words one prompt's answers may not write, as tokens: those that spell a word whole are never taken
    (`tokens`); a word the tokenizer splits (" thriller" is " thr" + "iller") is kept out by its last piece, which
    may not follow the pieces before it (`endings`: those pieces -> the last pieces they may not take next)."""

    tokens: frozenset[int] = frozenset()
    endings: Mapping[tuple[int, ...], frozenset[int]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.tokens or self.endings)

    @functools.cached_property
    def _longest(self) -> int:
        return max(map(len, self.endings), default=0)

    def after(self, tokens: list[int]) -> list[int]:
        """The last pieces of avoided words that the answer's last tokens have begun."""
        return [t for n in range(1, min(self._longest, len(tokens)) + 1)
                for t in self.endings.get(tuple(tokens[-n:]), ())]


@dataclass(frozen=True)
class Numbers:
    """The numbers one prompt's answers may write (the item's year, the digits of its names and description),
    spelled with the tokenizer's digit tokens (`digits`: token id -> its text, "7" or " 7"). Truth by
    construction for the claims copy makes most often: "a 12-year-old", "in the 1800s", "a 1996 film" for a
    1995 one were a third of the unsupported copy the tuned writer drew; a number is true or not written."""

    digits: Mapping[int, str]
    allowed: frozenset[str]

    def next(self, tokens: list[int]) -> tuple[list[int], list[int]]:
        """For an answer of `tokens` so far: (the digit tokens it may not take next, and the only tokens it may
        take next when it is inside a number that is not yet one of the allowed, else []). A digit token that
        opens with a space starts a new number."""
        number = ""
        for token in reversed(tokens):
            if token not in self.digits:
                break
            number = self.digits[token].strip() + number
            if self.digits[token][0].isspace():
                break
        banned, going_on = [], []
        for token, text in self.digits.items():
            fresh = text[0].isspace()
            if not any(n.startswith(text.strip() if fresh else number + text) for n in self.allowed):
                banned.append(token)
            elif not fresh:
                going_on.append(token)
        return banned, (going_on if number and number not in self.allowed else [])


@dataclass(frozen=True)
class Ends:
    """The lines of answers with a line rule: the tokens where they end (line breaks, and sentence ends:
    punctuation alone, such as ".", "!" or '."', so an abbreviation spelled as one token, "Mr.", ends none),
    what their second line opens with, and the words a line says once."""

    newlines: frozenset[int]
    sentences: frozenset[int] = frozenset()
    label: tuple[int, ...] = ()  # the tokens a two-line answer's second line opens with (the copy's "Body:")
    words: frozenset[int] = frozenset()  # content words (" classic", " dark"): once per line (`said`)

    def done(self, token: int, lines: int, stop_lines: int) -> bool:
        """Whether an answer that has just written `token`, with `lines` line breaks so far, is complete: at its
        `stop_lines`-th line break, or at the first sentence end of its last line (0: no limit). One sentence of
        body copy is what the worked examples show; the small model's later sentences were where it rambled
        ("The love is the love of your entire universe."), and they cost a quarter of the decode steps."""
        return stop_lines > 0 and (lines >= stop_lines or (lines == stop_lines - 1 and token in self.sentences))

    def forced(self, tokens: list[int], stop_lines: int) -> int | None:
        """The token an answer of `tokens` so far must take next, or None: the next token of `label` while the
        second line of an answer with `stop_lines` of 2 or more is spelling it. A label is no choice the model
        should make: the tuned writer wrote "Body." once in fifty answers, and the parser lost that body."""
        if stop_lines < 2 or not self.label:
            return None
        breaks = [k for k, t in enumerate(tokens) if t in self.newlines]
        if len(breaks) != 1:
            return None
        written = tokens[breaks[0] + 1:]
        if len(written) < len(self.label) and written == list(self.label[:len(written)]):
            return self.label[len(written)]
        return None

    def said(self, tokens: list[int]) -> list[int]:
        """The content words the current line of `tokens` has written, which it may not write again: the small
        model padded lines with them ("A classic 1994 classic", "A great 1997 comedy, a great one"), and
        tuning on an audience that likes mood words made half its answers do it."""
        line = []
        for token in reversed(tokens):
            if token in self.newlines:
                break
            if token in self.words:
                line.append(token)
        return line


class EngineUnavailable(RuntimeError):
    """llama.cpp cannot run this model here (not installed, or the file does not load)."""


# The CPU kernels built with AVX-512 and VNNI beside the AVX2 ones (Makefile), and every instruction set that
# build compiles for (AVX512_CMAKE_ARGS), so they load only where none of them is missing.
AVX512_KERNELS = Path(sys.prefix) / "lib" / "ggml-avx512" / "libggml-cpu.so.0"
AVX512_FLAGS = {"avx2", "fma", "f16c", "bmi2", "avx512f", "avx512cd", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni",
                "avx512vbmi"}


def cpu_flags() -> set[str]:
    """The instruction sets this CPU reports (Linux), empty where it cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return set()
    line = next((x for x in text.splitlines() if x.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def _load_fastest_kernels() -> str:
    """Load the AVX-512 kernels ahead of llama.cpp when this CPU has the instructions and `make setup` built
    them: the dynamic linker then uses them for llama.cpp's own `libggml-cpu.so.0` (same name), and decoding
    is about a third faster on this project's CPU. Elsewhere llama.cpp's AVX2 kernels load as usual. Returns
    which kernels llama.cpp will run on (kept in `KERNELS`)."""
    if not (AVX512_KERNELS.exists() and cpu_flags() >= AVX512_FLAGS):
        return "AVX2"
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return "AVX2"
    try:  # the kernels need llama.cpp's own base library, loaded first from the package's folder
        base = Path(spec.submodule_search_locations[0]) / "lib" / "libggml-base.so.0"
        ctypes.CDLL(str(base), mode=ctypes.RTLD_GLOBAL)
        ctypes.CDLL(str(AVX512_KERNELS), mode=ctypes.RTLD_GLOBAL)
    except OSError:
        return "AVX2"
    return "AVX-512"


def _library():
    global KERNELS
    try:
        if "llama_cpp" not in sys.modules:
            KERNELS = _load_fastest_kernels()
        import llama_cpp
    except (ImportError, OSError, RuntimeError) as exc:  # the shared library does not load on this machine
        raise EngineUnavailable(f"llama.cpp is not available ({exc}); run `make setup`") from exc
    return llama_cpp


THREADS_VARIABLE = "ADLOOP_THREADS"


def threads() -> int:
    """The cores this process may use: its CPU affinity, or fewer where ADLOOP_THREADS says so. A Ray actor given
    one core of a machine that runs one actor per core sets it: each engine spinning a thread per core of the
    machine would oversubscribe it, and ggml's polling threads then wait on each other."""
    cores = max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    wanted = os.environ.get(THREADS_VARIABLE, "")
    return min(cores, int(wanted)) if wanted.isdigit() and int(wanted) > 0 else cores


def per_prompt(stop_lines: int | list[int], prompts: int) -> list[int]:
    """`stop_lines` for each of `prompts` prompts: the same for all, or one each (a call may mix answers that
    write their title line with answers whose title code wrote)."""
    stops = list(stop_lines) if isinstance(stop_lines, list) else [stop_lines] * prompts
    if len(stops) != prompts:
        raise ValueError(f"{len(stops)} stop_lines for {prompts} prompts")
    return stops


@dataclass
class _Sequence:
    """One answer being decoded: its cache sequence id, sampler, position, tokens and line breaks so far."""

    seq: int
    sampler: object
    position: int
    logits_at: int
    tokens: list[int] = field(default_factory=list)
    lines: int = 0
    stop_lines: int = 0  # where `Ends.done` ends it (0: no limit)
    numbers: Numbers | None = None  # the numbers it may write (None: any)
    avoided: Avoided = field(default_factory=Avoided)  # the words it may not write


class LlamaCpp:
    """A GGUF model loaded in llama.cpp; `complete` is safe to call from many threads (one call at a time)."""

    def __init__(self, path: Path, ends: Ends, n_threads: int | None = None):
        lib = _library()
        self.lib, self.path, self.ends = lib, Path(path), ends
        self.model = self.context = self.batch = None
        lib.llama_backend_init()
        lib.llama_log_set(_silent_log(lib), None)
        loading = lib.llama_model_default_params()
        loading.use_mmap = False  # weights in the process's own memory: a mapped file's pages that sit idle
        # between requests can be reclaimed by the system and must then be read back from disk
        self.model = lib.llama_model_load_from_file(str(path).encode(), loading)
        if not self.model:
            raise EngineUnavailable(f"llama.cpp cannot load '{path}'")
        params = lib.llama_context_default_params()
        params.n_ctx, params.n_batch, params.n_ubatch = CONTEXT, BATCH_TOKENS, 512
        params.n_seq_max, params.kv_unified = MAX_SEQUENCES, True
        params.n_threads = params.n_threads_batch = n_threads or threads()
        self.context = lib.llama_init_from_model(self.model, params)
        if not self.context:
            self.close()
            raise EngineUnavailable(f"llama.cpp cannot make a context for '{path}'")
        self.vocab = lib.llama_model_get_vocab(self.model)
        self.end_ids = [t for t in range(lib.llama_vocab_n_tokens(self.vocab)) if lib.llama_vocab_is_eog(self.vocab, t)]
        self.memory = lib.llama_get_memory(self.context)
        self.batch = lib.llama_batch_init(BATCH_TOKENS, 0, MAX_SEQUENCES)
        self.prefix: list[int] = []  # tokens held by sequence 0
        self.lock = threading.Lock()

    def complete(self, prompts: list[list[int]], copies: int = 1, max_new_tokens: int = 48, temperature: float = 0.0,
                 top_p: float = 0.9, seed: int = 0, stop_lines: int | list[int] = 0, top_k: int = 0,
                 avoid: list[Avoided] | None = None, no_repeat: int = 0,
                 numbers: list[Numbers | None] | None = None) -> list[list[int]]:
        """`copies` answers (token ids) to each prompt, in order: prompt 0's copies, then prompt 1's...; `top_k`
        (0: all) bounds the tokens the nucleus is taken from; `avoid` (one per prompt) holds the words its
        answers never write; no answer repeats a run of `no_repeat` of its own tokens (0: no limit); `numbers`
        (one per prompt, None: any) bounds the numbers its answers write; an answer ends where `Ends.done`
        says, for `stop_lines` (one for all prompts, or one per prompt), and not before."""
        out: list[list[int]] = []
        avoid = avoid or [Avoided()] * len(prompts)
        numbers = numbers or [None] * len(prompts)
        stops = per_prompt(stop_lines, len(prompts))
        with self.lock:
            done = 0
            for chunk in self._chunks(prompts, copies, max_new_tokens):
                part = slice(done, done + len(chunk))
                out += self._complete(chunk, copies, max_new_tokens, (temperature, top_p, top_k), seed + len(out),
                                      (stops[part], no_repeat, numbers[part]), avoid[part])
                done += len(chunk)
        return out

    def _chunks(self, prompts: list[list[int]], copies: int, max_new_tokens: int):
        """Groups of prompts whose sequences and cache cells fit one call."""
        chunk: list[list[int]] = []
        cells = 0
        for prompt in prompts:
            need = len(prompt) + copies * max_new_tokens
            if chunk and ((len(chunk) + 1) * copies > MAX_SEQUENCES - 1 or cells + need > CONTEXT - 256):
                yield chunk
                chunk, cells = [], 0
            if need > CONTEXT - 256 or copies > MAX_SEQUENCES - 1:
                raise ValueError(f"A prompt of {len(prompt)} tokens with {copies} answers of {max_new_tokens} does "
                                 f"not fit the engine's {CONTEXT}-token cache")
            chunk.append(prompt)
            cells += need
        if chunk:
            yield chunk

    def _fill(self, entries: list[tuple[int, int, list[int], bool]]) -> None:
        """Decode (token, position, sequence ids, wants logits) entries in one batch."""
        if not entries:
            return
        if len(entries) > BATCH_TOKENS:
            raise ValueError(f"{len(entries)} tokens do not fit the engine's batch of {BATCH_TOKENS}")
        self.batch.n_tokens = len(entries)
        for i, (token, position, seqs, logits) in enumerate(entries):
            self.batch.token[i], self.batch.pos[i], self.batch.n_seq_id[i] = token, position, len(seqs)
            for j, seq in enumerate(seqs):
                self.batch.seq_id[i][j] = seq
            self.batch.logits[i] = logits
        if self.lib.llama_decode(self.context, self.batch) != 0:
            raise RuntimeError("llama.cpp could not decode the batch (cache full?)")

    def _share_prefix(self, prompts: list[list[int]]) -> int:
        """Keep the prompts' common prefix (all but each prompt's last token) in sequence 0; its length."""
        limit = min(len(p) for p in prompts) - 1
        common = 0
        while common < limit and all(p[common] == prompts[0][common] for p in prompts):
            common += 1
        kept = 0
        while kept < min(common, len(self.prefix)) and self.prefix[kept] == prompts[0][kept]:
            kept += 1
        self.lib.llama_memory_seq_rm(self.memory, 0, kept, -1)
        self.prefix = prompts[0][:kept]  # what sequence 0 holds should the fill below fail
        self._fill([(prompts[0][p], p, [0], False) for p in range(kept, common)])
        self.prefix = prompts[0][:common]
        return common

    def _sampler(self, seed: int, avoid: frozenset[int], temperature: float, top_p: float, top_k: int):
        """The sampler chain of one answer: the avoided tokens' logits set to minus infinity, then greedy or a
        seeded draw. A top-k cut first spares the nucleus a sort of the whole vocabulary for every answer at
        every step (a third of a 16-answer step on this CPU)."""
        lib = self.lib
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        if avoid:
            biases = (lib.llama_logit_bias * len(avoid))(*((t, float("-inf")) for t in sorted(avoid)))
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_logit_bias(
                lib.llama_vocab_n_tokens(self.vocab), len(avoid), biases))  # the sampler copies the biases
        if temperature <= 0:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
            return chain
        if top_k > 0:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_k(top_k))
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(temperature))
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_p(top_p, 1))
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        return chain

    def _start(self, prompts: list[list[int]], copies: int, common: int, sampling: tuple[float, float, int],
               seed: int, avoid: list[Avoided]) -> list[_Sequence]:
        """Prefill each distinct prompt's own tokens once, in its first sequence; every copy of it, and every
        repeat of the same prompt, shares that cache."""
        entries, owner = [], {}  # prompt -> (its first sequence, batch index of its last token's logits)
        for k, prompt in enumerate(prompts):
            if tuple(prompt) not in owner:
                first = 1 + k * copies
                self.lib.llama_memory_seq_cp(self.memory, 0, first, 0, common)
                entries += [(prompt[p], p, [first], p == len(prompt) - 1) for p in range(common, len(prompt))]
                owner[tuple(prompt)] = (first, len(entries) - 1)
        self._fill(entries)
        sequences = []
        for k, prompt in enumerate(prompts):
            first, logits_at = owner[tuple(prompt)]
            for c in range(copies):
                seq = 1 + k * copies + c
                if seq != first:
                    self.lib.llama_memory_seq_cp(self.memory, first, seq, -1, -1)
                sequences.append(_Sequence(seq, self._sampler(seed + seq, avoid[k].tokens, *sampling), len(prompt),
                                           logits_at, avoided=avoid[k]))
        return sequences

    def _complete(self, prompts: list[list[int]], copies: int, max_new_tokens: int,
                  sampling: tuple[float, float, int], seed: int,
                  limits: tuple[list[int], int, list[Numbers | None]], avoid: list[Avoided]) -> list[list[int]]:
        stops, no_repeat, numbers = limits
        sequences: list[_Sequence] = []
        try:
            common = self._share_prefix(prompts)
            sequences = self._start(prompts, copies, common, sampling, seed, avoid)
            for k, s in enumerate(sequences):  # prompt k // copies's copies, in order
                s.stop_lines, s.numbers = stops[k // copies], numbers[k // copies]
            active = list(sequences)
            for _ in range(max_new_tokens):
                running = []
                for s in active:
                    token = self._next(s, no_repeat)
                    if self.lib.llama_vocab_is_eog(self.vocab, token):
                        continue
                    s.tokens.append(token)
                    s.lines += token in self.ends.newlines
                    if not self.ends.done(token, s.lines, s.stop_lines) and len(s.tokens) < max_new_tokens:
                        running.append(s)
                active = running
                if not active:
                    break
                for i, s in enumerate(active):
                    s.logits_at = i
                self._fill([(s.tokens[-1], s.position + len(s.tokens) - 1, [s.seq], True) for s in active])
        finally:
            for s in sequences:
                self.lib.llama_sampler_free(s.sampler)
            for seq in range(1, MAX_SEQUENCES):  # also those a failed start had begun to fill
                self.lib.llama_memory_seq_rm(self.memory, seq, -1, -1)
        return [s.tokens for s in sequences]

    def _next(self, s: _Sequence, no_repeat: int) -> int:
        """Sample the next token of `s` under its rules: banned tokens' logits (repeats, early ends, the last
        pieces of avoided words) are set to minus infinity before its sampler reads them; inside an unfinished
        number, the likeliest digit that goes on to an allowed one replaces any other draw; a label's token
        (`Ends.forced`) is taken without a draw."""
        if (forced := self.ends.forced(s.tokens, s.stop_lines)) is not None:
            return forced
        banned = repeating_tokens(s.tokens, no_repeat) + (self.end_ids if s.lines < s.stop_lines else []) + \
            s.avoided.after(s.tokens) + (self.ends.said(s.tokens) if s.stop_lines else [])
        only: list[int] = []
        if s.numbers is not None:
            digits, only = s.numbers.next(s.tokens)
            banned = [t for t in banned if t not in only] + digits  # a begun number is finished, even as a repeat
        logits = self.lib.llama_get_logits_ith(self.context, s.logits_at) if banned or only else None
        for t in banned:
            logits[t] = float("-inf")
        token = self.lib.llama_sampler_sample(s.sampler, self.context, s.logits_at)
        if only and token not in only:
            token = max(only, key=lambda t: logits[t])
        return token

    def close(self) -> None:
        """Free the batch, context and weights (idempotent; also on garbage collection)."""
        if getattr(self, "batch", None) is not None:
            self.lib.llama_batch_free(self.batch)
        if getattr(self, "context", None):
            self.lib.llama_free(self.context)
        if getattr(self, "model", None):
            self.lib.llama_model_free(self.model)
        self.model = self.context = self.batch = None

    def __del__(self, _suppress=contextlib.suppress) -> None:  # bound now: at exit the module's names are gone
        with _suppress(TypeError, AttributeError):  # at interpreter exit the library may be unloaded
            self.close()


def _quiet_log(_level, _text, _user_data) -> None:
    """llama.cpp logs every load to stderr; the dashboard and CLI report loading themselves."""


_CALLBACKS: list = []  # the C callback must outlive every call into the library


def _silent_log(lib):
    if not _CALLBACKS:
        _CALLBACKS.append(lib.llama_log_callback(_quiet_log))
    return _CALLBACKS[0]
