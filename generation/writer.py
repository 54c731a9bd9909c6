"""The variant writer: K candidates per slot, checked, reranked, distinct; regenerating what fails.

Work comes as jobs (an item, a profile, how many variants). Every round sends each slot still empty,
across all jobs, through the model in batches; each slot gets `candidates` samples of its prompt (they
share the prompt's prefill in the engine). A candidate is kept only if it parses, passes every safety
check, and repeats no title of its job (same words ignoring case and punctuation, or a headline tail whose
embedding is a near-duplicate of one already kept) nor its text. Of the candidates left, one whose headline
is whole (not cut to the limit: `copy.cut_short`) fills the slot before any that was cut, and among those the
one the `score` callable (the train audience's predicted CTR for the job's user) rates highest.
A slot with no usable candidate is written again with new seeds; after the last round its best failure
is kept and marked rejected with its reasons, so nothing is silently dropped or shown as fine.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from generation import copy, safety

DUPLICATE_SIMILARITY = 0.92  # title and body together
TITLE_SIMILARITY = 0.9  # the tails of two headlines (the text after the item's name)
MAX_NEW_TOKENS = 48
NO_REPEAT = 3  # no answer repeats a run of this many of its own tokens: the repetition check's words, upstream
DEFAULT_CANDIDATES = 4  # samples per slot, reranked: chosen by measurement (README, bench/generation.py)
Scorer = Callable[[list[str], list[dict]], list[float]]  # (user ids, variants) -> predicted CTR of each


@dataclass
class Job:
    """Variants wanted for one item and one profile (a user)."""

    item: dict
    profile: dict
    n: int
    seed: int
    user_id: str = ""
    angles: list[str] | None = None  # the slots' angles; None: `copy.slots` of the profile (rewriting one card
    # keeps its angle)
    hooks: list[dict] = field(default_factory=list)  # the user's liked items related to the item (`taste.hooks`)
    slot_hooks: dict[int, dict] = field(default_factory=dict)  # slot -> the hook its headline names
    locked: dict[str, str] = field(default_factory=dict)  # fields kept as they are (title, body or CTA); the
    # model writes the rest, after a kept title
    accepted: list[dict] = field(default_factory=list)
    failed: dict[int, dict] = field(default_factory=dict)  # slot -> its latest round's best failed candidate
    drawn: dict[int, int] = field(default_factory=dict)  # slot -> candidates drawn for it
    vectors: list[np.ndarray] = field(default_factory=list)  # title and body of accepted variants
    tails: list[np.ndarray] = field(default_factory=list)  # headline tails (after the name) of accepted variants

    def result(self) -> list[dict]:
        return self.accepted + list(self.failed.values())


@dataclass
class Checks:
    """What the safety checks compare against: the catalog's categories and titles, and the brand kit."""

    categories: list[str]
    other_titles: list[str]
    brand_kit: dict

    def avoid(self, item: dict, hook: dict | None = None) -> list[str]:
        """Words the model is kept from writing about this item (`safety.words_to_avoid`), and in a hook slot's
        body the words of the hook's name (`safety.hook_words`)."""
        named = safety.hook_words(item, str(hook["title"])) if hook else []
        return safety.words_to_avoid(item, self.categories, self.brand_kit) + named

    def numbers(self, item: dict) -> frozenset[str]:
        """The only numbers the model may write about this item (`safety.numbers_to_allow`)."""
        return safety.numbers_to_allow(item, self.brand_kit)


@dataclass
class Candidate:
    """One sample for a slot, with its verdict and (when it passed) its predicted CTR."""

    record: dict
    fields: dict | None
    text_vector: np.ndarray | None = None
    tail_vector: np.ndarray | None = None
    score: float = 0.0
    cut_short: bool = False  # its headline had to be cut to the limit (`copy.cut_short`)


def _repeat_reason(candidate: Candidate, job: Job) -> str | None:
    """Why a passing candidate repeats a variant already kept in its job, or None."""
    fields = candidate.fields or {}
    if any(copy.title_key(a["title"]) == copy.title_key(fields["title"]) for a in job.accepted):
        return "repeats the title of another variant"
    if job.tails and float(np.max(np.stack(job.tails) @ candidate.tail_vector)) >= TITLE_SIMILARITY:
        return "title is a near-duplicate of another variant's"
    if any(copy.title_key(a["body"]) == copy.title_key(fields["body"]) for a in job.accepted):
        return "repeats the body of another variant"
    if any(copy.normalised(a) == copy.normalised(fields) for a in job.accepted) or (
            job.vectors and float(np.max(np.stack(job.vectors) @ candidate.text_vector)) >= DUPLICATE_SIMILARITY):
        return "near-duplicate of another variant"
    return None


def _fill_slot(job: Job, slot: int, candidates: list[Candidate]) -> bool:
    """Keep the best passing, non-repeating candidate in the slot; else remember the best failure."""
    passing = sorted((c for c in candidates if c.record["safety"]["status"] == "passed"),
                     key=lambda c: (c.cut_short, -c.score))  # a whole headline first, then the audience's pick
    job.drawn[slot] = job.drawn.get(slot, 0) + len(candidates)
    for candidate in passing:
        if reason := _repeat_reason(candidate, job):
            candidate.record["safety"] = safety.Verdict(False, [reason]).to_dict()
            continue
        job.failed.pop(slot, None)
        job.accepted.append(candidate.record | {"candidates": job.drawn[slot]})
        job.vectors.append(candidate.text_vector)
        job.tails.append(candidate.tail_vector)
        return True
    # the latest round's most nearly acceptable candidate: parsed ones first, then the fewest reasons
    best = min(candidates, key=lambda c: (c.fields is None, len(c.record["safety"]["reasons"])))
    job.failed[slot] = best.record | {"candidates": job.drawn[slot]}
    return False


def write_variants(generate: Callable, encode: Callable[[list[str]], np.ndarray], jobs: list[Job], checks: Checks,
                   score: Scorer | None = None, candidates: int = 1, rounds: int = 3, batch_size: int = 32,
                   progress: Callable[[float, str], None] | None = None, examples: bool = True) -> list[list[dict]]:
    """Variants for every job: each job's accepted variants first, then its rejected ones with reasons.
    `examples`: whether prompts carry the worked examples (`copy.uses_examples` of the model's adapter)."""
    pending = []
    for job in jobs:
        for slot, (angle, hook) in enumerate(copy.slots(job.profile, job.item, job.n, job.hooks, job.angles)):
            pending.append((job, slot, angle))
            if hook:
                job.slot_hooks[slot] = hook
    total = len(pending)
    per_call = max(1, batch_size // max(candidates, 1))
    for round_ in range(rounds):
        retry, start = [], 0
        for chunk in _chunks(pending, per_call):
            if progress:
                done = total - len(pending) + start
                progress(done / max(total, 1), f"Round {round_ + 1}: writing variants {start + 1}-"
                                               f"{start + len(chunk)} of {len(pending)} ({candidates} candidates each)")
            retry += _write_chunk(generate, encode, chunk, round_, checks, score, candidates, examples)
            start += len(chunk)
        pending = retry
        if not pending:
            break
    return [job.result() for job in jobs]


def _chunks(pending: list[tuple[Job, int, str]], size: int) -> list[list[tuple[Job, int, str]]]:
    """Calls of at most `size` slots (answers that write their title line and answers whose title code wrote
    share a call: each stops after its own number of lines)."""
    return [pending[start:start + size] for start in range(0, len(pending), size)]


def _written_title(job: Job, slot: int) -> str | None:
    """The title code writes for a slot (a kept one, or a hook's headline), or None when the model writes it."""
    hook = job.slot_hooks.get(slot)
    return job.locked.get("title") or (copy.hook_title(job.item, hook) if hook else None)


def _judge(job: Job, slot: int, record: dict, fields: dict | None, checks: Checks) -> Candidate:
    hook = job.slot_hooks.get(slot)
    record["hook"] = hook
    if fields is None:
        record |= {"title": "", "body": "", "cta": "",
                   "safety": {"status": "rejected", "reasons": ["could not be parsed"]}}
        return Candidate(record, None)
    fields = fields | job.locked  # kept fields stay as they were; the checks read the copy as it will run
    record |= fields
    record["safety"] = safety.check(fields, job.item, checks.categories, checks.other_titles, checks.brand_kit,
                                    [hook["title"]] if hook else []).to_dict()
    return Candidate(record, fields)


def _embed(encode: Callable, found: list[Candidate]) -> None:
    """Text and headline-tail vectors of the candidates that passed the checks (the only ones compared)."""
    if not found:
        return
    tails = [copy.headline_tail(c.fields["title"], c.record["item"]) or c.fields["title"] for c in found]
    vectors = encode([copy.normalised(c.fields) for c in found] + tails)
    for k, c in enumerate(found):
        c.text_vector, c.tail_vector = vectors[k], vectors[len(found) + k]


def _prompt_angle(job: Job, slot: int, angle: str) -> str:
    """What the model is told the viewer loves. A hook slot's headline, written by code, names the hook; its
    body sells the item through the user's strongest interest the item has: told the hook's name, the model
    wrote of the hook as if it were the item ("A classic Jerry Maguire comedy" for Vegas Vacation), and a body
    may name no other item (`safety.fact_check`)."""
    return copy.angles(job.profile, job.item, 1)[0] if slot in job.slot_hooks else angle


def _write_chunk(generate: Callable, encode: Callable, chunk: list[tuple[Job, int, str]], round_: int,
                 checks: Checks, score: Scorer | None, candidates: int, examples: bool) -> list[tuple[Job, int, str]]:
    """One batched model call for a chunk of (job, slot, angle); returns the slots to write again."""
    # the engine seeds each answer with seed + 1 + its index in the call, so basing the call on the first slot
    # times K gives every (slot, candidate) of a job its own seed in a round
    seed = chunk[0][0].seed + 1000 * round_ + chunk[0][1] * candidates
    chats = [copy.prompt_for(job.item, job.profile, _prompt_angle(job, slot, angle), examples)
             for job, slot, angle in chunk]
    starts = [copy.answer_start(job.item, _written_title(job, slot)) for job, slot, _ in chunk]
    lines = [copy.ANSWER_LINES - (_written_title(job, slot) is not None) for job, slot, _ in chunk]  # a title
    # written by code is a line done
    answers = generate(chats, max_new_tokens=MAX_NEW_TOKENS, temperature=0.7, seed=seed, assistant_prefix=starts,
                       copies=candidates, stop_lines=lines, no_repeat=NO_REPEAT,
                       avoid=[checks.avoid(job.item, job.slot_hooks.get(slot)) for job, slot, _ in chunk],
                       numbers=[checks.numbers(job.item) for job, _, _ in chunk])
    if len(answers) != len(chunk) * candidates:
        raise RuntimeError(f"The model returned {len(answers)} answers for {len(chunk)} prompts x {candidates}")
    drawn: list[list[Candidate]] = []
    for k, ((job, slot, angle), chat, start) in enumerate(zip(chunk, chats, starts, strict=True)):
        slot_answers = answers[k * candidates:(k + 1) * candidates]
        cta = copy.call_to_action(checks.brand_kit, slot)
        drawn.append([_judge(job, slot, {"angle": angle, "seed": seed, "raw": raw, "prompt": json.dumps(chat),
                                         "item": job.item}, copy.parse(raw, cta, start), checks)
                      for raw in slot_answers])
        for candidate, raw in zip(drawn[-1], slot_answers, strict=True):
            candidate.cut_short = copy.cut_short(raw, start)
    passed = [c for group in drawn for c in group if c.record["safety"]["status"] == "passed"]
    _embed(encode, passed)
    if score is not None and passed:
        users = [job.user_id for (job, _, _), group in zip(chunk, drawn, strict=True) for c in group
                 if c.record["safety"]["status"] == "passed"]
        for c, value in zip(passed, score(users, [c.fields for c in passed]), strict=True):
            c.score = float(value)
    retry = []
    for (job, slot, angle), group in zip(chunk, drawn, strict=True):
        for c in group:
            c.record.pop("item")
        if not _fill_slot(job, slot, group):
            retry.append((job, slot, angle))
    return retry
