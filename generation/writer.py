"""The variant writer: batched generation, then parse, de-duplicate and check, regenerating what fails.

Work comes as jobs (an item, a profile, how many variants); every round sends all variants still
missing, across all jobs, through the model in batches. A variant that cannot be parsed, repeats
another of its job, or fails a safety check is written again with a new seed; after the last round
the failures are kept and marked rejected with their reasons, so nothing is silently dropped or
silently shown as fine.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from generation import copy, safety

DUPLICATE_SIMILARITY = 0.92


@dataclass
class Job:
    """Variants wanted for one item and one profile (a user)."""

    item: dict
    profile: dict
    n: int
    seed: int
    accepted: list[dict] = field(default_factory=list)
    failed: dict[int, dict] = field(default_factory=dict)  # slot -> latest failed attempt
    vectors: list[np.ndarray] = field(default_factory=list)

    def result(self) -> list[dict]:
        return self.accepted + list(self.failed.values())


@dataclass
class Checks:
    """What the safety checks compare against: the catalog's categories and titles, and the brand kit."""

    categories: list[str]
    other_titles: list[str]
    brand_kit: dict


def _is_duplicate(text: str, vector: np.ndarray, job: Job) -> bool:
    if any(copy.normalised(a) == text for a in job.accepted):
        return True
    return bool(job.vectors) and float(np.max(np.stack(job.vectors) @ vector)) >= DUPLICATE_SIMILARITY


def _judge(job: Job, slot: int, record: dict, vector: np.ndarray | None, checks: Checks) -> bool:
    """Accept the attempt into its job or remember it as the slot's latest failure; True if accepted."""
    if vector is None:
        job.failed[slot] = record | {"title": "", "body": "", "cta": "",
                                     "safety": {"status": "rejected", "reasons": ["could not be parsed"]}}
        return False
    fields = {k: record[k] for k in ("title", "body", "cta")}
    verdict = safety.check(fields, job.item, checks.categories, checks.other_titles, checks.brand_kit)
    if verdict.passed and _is_duplicate(copy.normalised(fields), vector, job):
        verdict = safety.Verdict(False, ["near-duplicate of another variant"])
    record["safety"] = verdict.to_dict()
    if not verdict.passed:
        job.failed[slot] = record
        return False
    job.failed.pop(slot, None)
    job.accepted.append(record)
    job.vectors.append(vector)
    return True


def write_variants(generate: Callable, encode: Callable[[list[str]], np.ndarray], jobs: list[Job], checks: Checks,
                   rounds: int = 3, batch_size: int = 16,
                   progress: Callable[[float, str], None] | None = None) -> list[list[dict]]:
    """Variants for every job: each job's accepted variants first, then its rejected ones with reasons."""
    pending = [(j, slot, angle) for j in jobs for slot, angle in enumerate(copy.angles(j.profile, j.item, j.n))]
    total = len(pending)
    for round_ in range(rounds):
        retry = []
        for start in range(0, len(pending), batch_size):
            chunk = pending[start:start + batch_size]
            if progress:
                done = total - len(pending) + start
                progress(done / max(total, 1), f"Round {round_ + 1}: writing variants {start + 1}-"
                                               f"{start + len(chunk)} of {len(pending)}")
            retry += _write_chunk(generate, encode, chunk, round_, checks)
        pending = retry
        if not pending:
            break
    return [job.result() for job in jobs]


def _write_chunk(generate: Callable, encode: Callable, chunk: list[tuple[Job, int, str]], round_: int,
                 checks: Checks) -> list[tuple[Job, int, str]]:
    """One batched model call for a chunk of (job, slot, angle); returns the ones to write again."""
    seed = chunk[0][0].seed + 1000 * round_ + chunk[0][1]
    chats = [copy.prompt_for(job.item, job.profile, angle) for job, _, angle in chunk]
    answers = generate(chats, max_new_tokens=56, temperature=0.7, seed=seed, assistant_prefix="Title:")
    default_cta = checks.brand_kit.get("default_cta", "Learn more")
    parsed = [copy.parse(raw, default_cta) for raw in answers]
    texts = [copy.normalised(p) for p in parsed if p is not None]
    vectors = iter(encode(texts)) if texts else iter(())
    retry = []
    for (job, slot, angle), chat, raw, fields in zip(chunk, chats, answers, parsed, strict=True):
        record = {"angle": angle, "seed": seed, "raw": raw, "prompt": json.dumps(chat)} | (fields or {})
        if not _judge(job, slot, record, next(vectors) if fields is not None else None, checks):
            retry.append((job, slot, angle))
    return retry
