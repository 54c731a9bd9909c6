"""Did tuning work? Held-out users, judged by the JUDGE audience, against two baselines.

Settings, all on the same held-out prompts (users the tuning never saw, `tuning.prompts` split):
- `base`: the base model, one sample per prompt;
- `best_of_n`: the base model's best of N samples, chosen by the TRAIN audience (what reranking alone buys);
- `tuned`: base model + the run's LoRA adapter, one sample per prompt.
Each can be drawn several times per prompt (`draws`) and averaged, for a less noisy estimate of the same.
The judge audience has its own appeal model and click-model form, so a policy that games the train
reward's particular form does not also win here. Besides CTR: diversity (distinct-2, embedding
self-similarity), catalog factuality, length, and the KL of the tuned policy to the base (from log-probs
of the tuned samples under both), with a before/after table for reading the copy itself.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from generation import copy, models
from store import movielens
from store import runs as run_store
from tuning import targets
from tuning.reward import catalog
from tuning.sampling import TEMPERATURE, engine_for, sample, sample_on
from tuning.trainers import load_policy, load_tokenizer, resolve_model


def _log_probs(model, prompt: torch.Tensor, completion: torch.Tensor) -> torch.Tensor:
    """The model's next-token log-probabilities over the whole vocabulary at each completion position."""
    ids = torch.cat([prompt, completion]).unsqueeze(0).to(model.device)
    with torch.inference_mode():
        logits = model(input_ids=ids).logits[0, len(prompt) - 1:-1].float().cpu()
    return torch.log_softmax(logits, -1)


def kl_to_base(peft_model, prompt_ids: list[torch.Tensor], completion_ids: list[torch.Tensor]) -> dict:
    """KL(tuned || base) in nats, per token and per sequence: at every position of the tuned samples, the exact KL
    between the two models' next-token distributions over the whole vocabulary, sum_v p(v) (log p(v) - log q(v)).
    Never negative, unlike the mean log-ratio of the sampled tokens, which a few dozen samples drawn with the
    Studio's nucleus and rules can push below zero. The positions are those the Studio's sampling visits."""
    total, tokens, sequences = 0.0, 0, 0
    for prompt, completion in zip(prompt_ids, completion_ids, strict=True):
        if len(completion) == 0:
            continue
        tuned = _log_probs(peft_model, prompt, completion)
        with peft_model.disable_adapter():
            base = _log_probs(peft_model, prompt, completion)
        total += float((tuned.exp() * (tuned - base)).sum().clamp(min=0.0))
        tokens, sequences = tokens + len(completion), sequences + 1
    return {"per_sequence": total / max(sequences, 1), "per_token": total / max(tokens, 1)}


def mean_ci(values: list[float]) -> dict:
    """Mean with a normal-approximation 95% confidence interval, clipped to [0, 1] (values are probabilities)."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return {"mean": float(x.mean()), "ci_low": None, "ci_high": None, "n": len(x)}
    half = 1.96 * x.std(ddof=1) / math.sqrt(len(x))
    return {"mean": float(x.mean()), "ci_low": max(0.0, float(x.mean() - half)),
            "ci_high": min(1.0, float(x.mean() + half)), "n": len(x)}


def distinct_2(texts: list[str]) -> float:
    """Distinct word bigrams over all bigrams: 1.0 when no two-word phrase repeats anywhere."""
    grams = [tuple(w[i:i + 2]) for w in (t.lower().split() for t in texts) for i in range(len(w) - 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def self_similarity(texts: list[str]) -> float | None:
    """Mean pairwise cosine similarity of MiniLM embeddings (high: the copies all say the same thing)."""
    if len(texts) < 2:
        return None
    v = models.embedder().encode(texts)
    sims = v @ v.T
    return float((sims.sum() - np.trace(sims)) / (len(texts) * (len(texts) - 1)))


def paired_uplift(treated: list[float], control: list[float]) -> dict:
    """Mean per-prompt difference (same users, same items) with its 95% interval: far tighter than comparing
    two independent means, because most of the spread in CTR is between users, not between copies."""
    diff = (np.asarray(treated, dtype=float) - np.asarray(control, dtype=float)).tolist()
    out = mean_ci(diff)
    if out["ci_low"] is not None:  # a difference may be negative: undo mean_ci's clip to [0, 1]
        half = 1.96 * float(np.std(diff, ddof=1)) / math.sqrt(len(diff))
        out.update(ci_low=out["mean"] - half, ci_high=out["mean"] + half)
    return out


def copy_metrics(raw: list[str], rows: list[dict], dataset: str) -> dict:
    """What reward hacking of ad copy would show: diversity, catalog factuality, Studio acceptance, length."""
    item_ids = [r["item_id"] for r in rows]
    shown = catalog(dataset)
    creatives = [shown.creative(t, i) for t, i in zip(raw, item_ids, strict=True)]
    return {"distinct_2": distinct_2(creatives), "self_similarity": self_similarity(creatives),
            "factual_rate": float(np.mean([shown.factual(t, i) for t, i in zip(raw, item_ids, strict=True)])),
            "accept_rate": float(np.mean([shown.accepted(t, i) for t, i in zip(raw, item_ids, strict=True)])),
            "parse_rate": float(np.mean([shown.fields(t, i) is not None for t, i in zip(raw, item_ids, strict=True)])),
            "mean_words": float(np.mean([len(c.split()) for c in creatives]))}


def setting_metrics(target: str, draws: list[list[str]], rows: list[dict], dataset: str, judge, train) -> dict:
    """Judge CTR per prompt (mean over the draws) with its CI, the train reward, and the target's own quality
    metrics averaged over the draws (each draw holds one output per prompt, so diversity stays comparable)."""
    users, item_ids = [r["user_id"] for r in rows], [r["item_id"] for r in rows]
    judged = np.mean([judge(raw, user_id=users, item_id=item_ids) for raw in draws], axis=0).tolist()
    if target == "brief":
        from tuning import brief_tuning

        extra = [brief_tuning.metrics(raw, rows, dataset) for raw in draws]
    else:
        extra = [copy_metrics(raw, rows, dataset) for raw in draws]
    averaged = {k: None if any(e[k] is None for e in extra) else float(np.mean([e[k] for e in extra]))
                for k in extra[0]}
    return {"judge_ctr": mean_ci(judged), "judge_per_prompt": judged,
            "train_ctr": float(np.mean([train(raw, user_id=users, item_id=item_ids) for raw in draws])),
            **averaged}


def _draw(model, tokenizer, texts: list[str], copies: int, args: dict,
          fast: models.TextModel | None = None) -> tuple[list[list[str]], list, list]:
    """`copies` independent samples per prompt, as that many lists with one output per prompt (plus the token
    ids of the first list, for the KL); with the Studio's rules, on its engine when `fast` holds the same
    weights."""
    if fast is not None:
        raw, prompt_ids, completion_ids = sample_on(fast, texts, seed=args["seed"], copies=copies,
                                                    rules=args["rules"], **_gen(args))
    else:
        raw, prompt_ids, completion_ids = sample(model, tokenizer, texts, seed=args["seed"], copies=copies, batch=32,
                                                 rules=args["rules"], **_gen(args))
    return [raw[k::copies] for k in range(copies)], prompt_ids[::copies], completion_ids[::copies]


def _best_of(pool: list[list[str]], rows: list[dict], n: int, train) -> list[list[str]]:
    """Split the base pool into groups of `n` draws; per prompt and group, the sample the TRAIN audience likes best."""
    users, item_ids = [r["user_id"] for r in rows], [r["item_id"] for r in rows]
    picks = []
    for group in range(len(pool) // n):
        candidates = pool[group * n:(group + 1) * n]
        scores = np.asarray([train(raw, user_id=users, item_id=item_ids) for raw in candidates])
        best = scores.argmax(axis=0)
        picks.append([candidates[int(best[k])][k] for k in range(len(rows))])
    return picks


def _gen(args: dict) -> dict:
    return {"max_new_tokens": args["max_new_tokens"], "temperature": args["temperature"]}


def evaluate(adapter_path: str, dataset: str = movielens.NAME, model: str = "", users: int = 16, best_of: int = 4,
             max_new_tokens: int = 48, temperature: float = TEMPERATURE, seed: int = 0, samples: int = 5,
             target: str = "copy", studio_gate: bool = False, draws: int = 1) -> dict:
    """Compare base, best-of-N and tuned on held-out users with the judge audience; a JSON-able dict.

    `draws` independent outputs per prompt and setting are judged and averaged: a setting's score per
    prompt is then the expected CTR of ONE output (still "at 1 sample"), measured with less noise. The
    base model draws `draws x best_of` samples: all of them estimate base@1, and each group of `best_of`
    gives one best-of-N pick, chosen by the run's own training reward (`studio_gate` as the run had it),
    i.e. what reranking with the same signal buys without any tuning. The model is loaded fresh, never the
    app's shared copy, because the adapter is injected into the model it wraps.
    """
    from peft import PeftModel

    path = resolve_model(model)
    tokenizer, base = load_tokenizer(path), load_policy(path, models.resolve_device("auto")).eval()
    rows = targets.rows(target, dataset, "held_out", users)
    texts = targets.texts(target, tokenizer, rows)
    args = {"max_new_tokens": max_new_tokens, "temperature": temperature, "seed": seed,
            "rules": targets.rules(target, dataset, rows)}
    judge = targets.reward(target, dataset, "judge")
    train = targets.reward(target, dataset, "train", studio_gate=studio_gate)
    with engine_for(path) as fast:
        pool = _draw(base, tokenizer, texts, draws * best_of, args, fast)[0]
    outputs = {"base": pool, "best_of_n": _best_of(pool, rows, best_of, train)}
    tuned_model = PeftModel.from_pretrained(base, adapter_path).eval()
    tuned_texts = targets.texts(target, tokenizer, rows, copy.uses_examples(adapter_path))  # its own prompt
    with engine_for(path, adapter_path) as fast:
        outputs["tuned"], prompt_ids, completion_ids = _draw(tuned_model, tokenizer, tuned_texts, draws, args, fast)
    result = {name: setting_metrics(target, raw, rows, dataset, judge, train) for name, raw in outputs.items()}
    per_prompt = {name: result[name].pop("judge_per_prompt") for name in outputs}
    return {"judge_ctr": {name: result[name]["judge_ctr"]["mean"] for name in outputs}, "settings": result,
            "uplift": {"tuned_vs_base": paired_uplift(per_prompt["tuned"], per_prompt["base"]),
                       "tuned_vs_best_of_n": paired_uplift(per_prompt["tuned"], per_prompt["best_of_n"])},
            "kl_to_base": kl_to_base(tuned_model, prompt_ids, completion_ids), "users": len(rows),
            "judge_per_prompt": per_prompt, "best_of": best_of, "draws": draws, "adapter": str(adapter_path),
            "model": path, "dataset": dataset, "target": target,
            "samples": _table(target, rows, catalog(dataset), {k: v[0] for k, v in outputs.items()}, samples),
            "outputs": judged_outputs(target, rows, catalog(dataset), outputs)}


def judged_outputs(target: str, rows: list[dict], shop, outputs: dict[str, list[list[str]]]) -> list[dict]:
    """Every output the judge scored, {group, user_id, item_id, title, body, cta}, so another judge can score
    exactly the same copy: copy as the Studio parses it (an unparsable answer as its raw title), a brief as
    its text in `body`."""
    out = []
    for group, draws in outputs.items():
        for raw_list in draws:
            for raw, row in zip(raw_list, rows, strict=True):
                if target == "copy":
                    fields = shop.read(raw, row["item_id"])
                else:
                    fields = {"title": "", "body": targets.answer_prefix(target, row) + raw, "cta": ""}
                out.append({"group": group, "user_id": row["user_id"], "item_id": row["item_id"],
                            **{k: fields[k] for k in ("title", "body", "cta")}})
    return out


def _table(target: str, rows: list[dict], shop, outputs: dict[str, list[str]], limit: int) -> list[dict]:
    """Before/after outputs for the same prompts: copy as the audience reads it, briefs as written."""
    def shown(raw: str, row: dict) -> str:
        if target == "copy":
            return shop.creative(raw, row["item_id"])
        return targets.answer_prefix(target, row) + raw

    return [{"user_id": r["user_id"], "item": shop.items[r["item_id"]]["title"], "angle": r.get("angle", ""),
             **{name: shown(raw[k], r) for name, raw in outputs.items()}} for k, r in enumerate(rows[:limit])]


def evaluate_run(run_id: str, **options) -> dict:
    """Evaluate a finished (or cancelled) run's adapter and store the result with the run."""
    run = run_store.get_run(run_id)
    if not run["adapter_path"]:
        raise ValueError(f"Run '{run_id}' has no adapter yet ({run['status']})")
    config = run["config"]
    if run["method"] == "diffusion_dpo":
        raise ValueError("Diffusion-DPO runs tune the image model: judge them by rendering banners in the Studio")
    result = evaluate(run["adapter_path"], run["dataset"], config.get("model", ""), target=config.get("target", "copy"),
                      studio_gate=bool(config.get("studio_gate", False)), **options)
    run_store.update_run(run_id, evaluation={"status": "finished", "options": options, **result})
    return result
