"""Copy-generation speed and quality: the fast engine against transformers fp32, in the same run, same prompts.

    .venv/bin/python bench/generation.py [--repeats 5] [--users 16] [--json]

1. Latency of 8 variants for one user (user 1, Star Wars): the Studio's writer with one candidate per slot
   and one round, on the configured engine (llama.cpp on a CPU) and on transformers fp32 `generate` as the
   Studio ran it before (no stop: answers run to the token limit), and with the same stop (`engine.Ends`);
   p50 over `--repeats` seeds, after one warm-up request on each path (the engine keeps the prompts' shared
   prefix between requests, as in a Studio that has answered one already).
2. Candidates per slot (K = 1, 2, 4): for `--users` held-out users x 4 variants each, one round: seconds,
   share of slots filled by a passing candidate (the first-draw accepted share), share of candidates that
   pass, the train audience's mean predicted CTR of the kept variants, and the share of kept headlines that
   had to be cut to the 60-character limit (the writer prefers whole ones). The Studio's default K is the
   smallest whose accepted share and CTR are within a point of the next.
3. The whole Studio request (profile, copy with the default K, checks, briefs, banners in every size,
   scores, store) for 4 variants, p50 of 3.
4. Repeated titles and unsupported names among everything accepted (both must be 0).

With --json the last line is one JSON object with these figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import services  # noqa: E402
import settings  # noqa: E402
from generation import copy, grounding, models, safety, writer  # noqa: E402
from tuning import prompts  # noqa: E402

DATASET = services.common.DEFAULT_DATASET
ITEM, USER = "50", "1"


def checks() -> writer.Checks:
    labels, titles = safety.catalog_vocabulary(DATASET)
    return writer.Checks(labels, titles, services.studio.brand_kit().check_terms())


def user_jobs(pairs: list[tuple[str, str]], n: int, seed: int) -> list[writer.Job]:
    catalog = services.common.catalog(DATASET)
    return [writer.Job(catalog.loc[item].to_dict() | {"item_id": item},
                       services.audience.profile(DATASET, user, use_llm=False), n, seed + k, user,
                       hooks=services.audience.hooks(DATASET, user, item))  # as the Studio: hook slots too
            for k, (user, item) in enumerate(pairs)]


def write(generate, jobs: list[writer.Job], candidates: int, score=None) -> tuple[float, list[list[dict]]]:
    started = time.perf_counter()
    out = writer.write_variants(generate, models.embedder().encode, jobs, checks(), score=score,
                                candidates=candidates, rounds=1)
    return time.perf_counter() - started, out


def no_stop(llm: models.TextModel):
    """The Studio's generate call as it was: no stop at the end of the call to action."""
    def generate(chats, **options):
        return llm.generate(chats, **(options | {"stop_lines": 0}))
    return generate


def latency(repeats: int, fast: models.TextModel, slow: models.TextModel) -> dict:
    runs: dict[str, list[float]] = {"fast": [], "transformers": [], "transformers_stop": []}
    accepted = []
    for llm in (fast, slow):  # warm: the engine's shared prefix and both paths' first-call setup, as in a Studio
        write(llm.generate, user_jobs([(USER, ITEM)], 8, 99), 1)  # that has answered one request already
    for seed in range(repeats):
        seconds, out = write(fast.generate, user_jobs([(USER, ITEM)], 8, seed), 1)
        runs["fast"].append(seconds)
        accepted.append(sum(v["safety"]["status"] == "passed" for v in out[0]) / 8)
        runs["transformers"].append(write(no_stop(slow), user_jobs([(USER, ITEM)], 8, seed), 1)[0])
        runs["transformers_stop"].append(write(slow.generate, user_jobs([(USER, ITEM)], 8, seed), 1)[0])
    p50 = {k: statistics.median(v) for k, v in runs.items()}
    print(f"8 variants for user {USER}, item {ITEM}, p50 of {repeats}: {fast.engine} {p50['fast']:.2f} s; "
          f"transformers fp32 {p50['transformers']:.2f} s (as before, no stop), "
          f"{p50['transformers_stop']:.2f} s (same stop); speed-up {p50['transformers'] / p50['fast']:.1f}x "
          f"({p50['transformers_stop'] / p50['fast']:.1f}x with the same stop); accepted "
          f"{statistics.mean(accepted):.0%}")
    return {"p50_seconds_8_variants": round(p50["fast"], 3),
            "transformers_fp32_p50_seconds": round(p50["transformers"], 3),
            "transformers_fp32_same_stop_p50_seconds": round(p50["transformers_stop"], 3),
            "speedup_vs_transformers_fp32": round(p50["transformers"] / p50["fast"], 2),
            "speedup_vs_transformers_fp32_same_stop": round(p50["transformers_stop"] / p50["fast"], 2),
            "accepted_share_8_variants_k1": round(statistics.mean(accepted), 3)}


def candidates_sweep(users: int, fast: models.TextModel) -> dict:
    rows = prompts.prompt_rows(DATASET, "held_out", users)
    pairs = [(r["user_id"], r["item_id"]) for r in rows]
    score = services.studio.reranker  # the Studio's own reranking signal
    sweep = {}
    for k in (1, 2, 4):
        per_item = {}
        seconds = 0.0
        filled, kept_scores, slots, cut = 0, [], 0, 0
        for user, item in pairs:
            per_item.setdefault(item, []).append(user)
        for item, members in per_item.items():
            jobs = user_jobs([(u, item) for u in members], 4, 0)
            took, out = write(fast.generate, jobs, k, score(DATASET, item))
            seconds += took
            for variants in out:
                slots += len(variants)
                good = [v for v in variants if v["safety"]["status"] == "passed"]
                filled += len(good)
            kept = [(j.user_id, v) for j, variants in zip(jobs, out, strict=True) for v in variants
                    if v["safety"]["status"] == "passed"]
            cut += sum(copy.cut_short(v["raw"], copy.answer_start(jobs[0].item)) for _, v in kept if not v["hook"])
            if kept:
                kept_scores += list(score(DATASET, item)([u for u, _ in kept], [v for _, v in kept]))
        share = filled / max(slots, 1)
        ctr = statistics.mean(kept_scores) if kept_scores else 0.0
        sweep[k] = {"seconds": round(seconds, 2), "accepted_share": round(share, 3), "train_ctr": round(ctr, 5),
                    "variants": slots, "cut_headlines_share": round(cut / max(filled, 1), 3)}
        print(f"K={k}: {slots} slots for {len(pairs)} held-out users in {seconds:.1f} s "
              f"({seconds / max(slots, 1):.2f} s/variant); accepted {share:.0%}; train CTR of kept {ctr:.2%}; "
              f"headlines cut to the limit {cut / max(filled, 1):.0%} of kept")
    return sweep


def whole_request(repeats: int = 3) -> tuple[float, list[dict]]:
    services.studio.generate(DATASET, ITEM, user_id=USER, n=4, seed=99)  # warm: profile, briefs, audience
    times, variants = [], []
    for seed in range(repeats):
        started = time.perf_counter()
        made = services.studio.generate(DATASET, ITEM, user_id=USER, n=4, seed=seed)
        times.append(time.perf_counter() - started)
        variants += made
    p50 = statistics.median(times)
    accepted = sum(v["safety"]["status"] == "passed" for v in variants) / len(variants)
    print(f"whole Studio request, 4 variants with banners in all sizes and scores (K={writer.DEFAULT_CANDIDATES}): "
          f"p50 {p50:.2f} s of {repeats}; accepted {accepted:.0%}")
    return p50, variants


def audit(variants: list[dict]) -> dict:
    """Repeated titles within a request and accepted variants that state something unsupported (the grounding
    check read again, a hook's name being its variant's evidence as in the Studio)."""
    repeated, unsupported = 0, 0
    item = services.common.catalog(DATASET).loc[ITEM].to_dict()
    facts = grounding.facts_for(item, services.studio.brand_kit().check_terms())
    labels, titles = safety.catalog_vocabulary(DATASET)
    batches: dict[str, list[str]] = {}
    for v in variants:
        if v["safety"]["status"] == "passed":
            batches.setdefault(v["batch"], []).append(copy.title_key(v["title"]))
            evidence = [v["hook"]["title"]] if v.get("hook") else []
            unsupported += bool(safety.fact_check(v, item, labels, titles, facts, evidence).unsupported)
    for titles in batches.values():
        repeated += len(titles) - len(set(titles))
    print(f"repeated titles: {repeated}; accepted variants naming something the catalog lacks: {unsupported}")
    return {"repeated_titles": repeated, "unsupported_accepted": unsupported}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    services.settings.prepare()
    cfg = settings.load()
    fast = models.text_model()
    slow = models.load_text_model(cfg.text_model, "cpu", Path(cfg.model_cache), engine="transformers")
    print(f"model {fast.model_id}: engine {fast.engine}{' (' + fast.engine_note + ')' if fast.engine_note else ''}; "
          f"baseline transformers fp32 on cpu")
    figures = latency(args.repeats, fast, slow)
    sweep = candidates_sweep(args.users, fast)
    seconds, variants = whole_request()
    figures |= {"whole_request_seconds": round(seconds, 3), "accepted_share": sweep[writer.DEFAULT_CANDIDATES][
        "accepted_share"], "default_candidates": writer.DEFAULT_CANDIDATES, "candidates": sweep,
        "engine": fast.engine, **audit(variants)}
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
