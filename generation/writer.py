"""The variant writer: batched generation, then parse, de-duplicate and check, regenerating what fails.

Every round is one batched model call for all variants still missing. A variant that cannot be
parsed, repeats another, or fails a safety check is written again with a new seed; after the last
round the failures are kept and marked rejected with their reasons, so nothing is silently dropped
or silently shown as fine.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np

from generation import copy, safety

DUPLICATE_SIMILARITY = 0.92


def _duplicate(text: str, vector: np.ndarray, kept_texts: list[str], kept_vectors: list[np.ndarray]) -> bool:
    if text in kept_texts:
        return True
    return bool(kept_vectors) and float(np.max(np.stack(kept_vectors) @ vector)) >= DUPLICATE_SIMILARITY


def write_variants(generate: Callable, encode: Callable[[list[str]], np.ndarray], item: dict, profile: dict,
                   n: int, seed: int, categories: list[str], other_titles: list[str], brand_kit: dict,
                   rounds: int = 3, progress: Callable[[float, str], None] | None = None) -> list[dict]:
    """N variants for one item and profile: the accepted first, then any rejected with reasons."""
    accepted: list[dict] = []
    texts: list[str] = []
    vectors: list[np.ndarray] = []
    pending = copy.angles(profile, item, n)
    last_failure: dict[str, dict] = {}
    for round_ in range(rounds):
        if not pending:
            break
        if progress:
            progress(round_ / rounds, f"Writing {len(pending)} variant(s), round {round_ + 1}")
        results = copy.write(generate, item, profile, len(pending), seed + 1000 * round_, pending,
                             brand_kit.get("default_cta", "Learn more"))
        retry = []
        parsed = [n for n, r in enumerate(results) if r[3] is not None]
        encoded = encode([copy.normalised(results[n][3]) for n in parsed]) if parsed else []
        vector_of = dict(zip(parsed, encoded, strict=True))
        for index, (angle, used_seed, raw, fields) in enumerate(results):
            record = {"angle": angle, "seed": used_seed, "raw": raw,
                      "prompt": json.dumps(copy.prompt_for(item, profile, angle))}
            if fields is None:
                last_failure[angle] = record | {"title": "", "body": "", "cta": "",
                                                "safety": {"status": "rejected", "reasons": ["could not be parsed"]}}
                retry.append(angle)
                continue
            text, vector = copy.normalised(fields), vector_of[index]
            verdict = safety.check(fields, item, categories, other_titles, brand_kit)
            if _duplicate(text, vector, texts, vectors):
                verdict = safety.Verdict(False, ["near-duplicate of another variant"])
            record |= fields | {"safety": verdict.to_dict()}
            if verdict.passed:
                accepted.append(record)
                texts.append(text)
                vectors.append(vector)
            else:
                last_failure[angle] = record
                retry.append(angle)
        pending = retry
    return accepted + [last_failure[a] for a in pending]
