"""Does reward tuning pay on a laptop? Judge CTR of tuned@1 vs base@1 vs base best-of-4 on held-out users.

    .venv/bin/python bench/tune_uplift.py [--method best_of_n_sft_dpo] [--minutes 15] [--users 192]
        [--eval-users 96] [--draws 2] [--seed 0] [--sft-per-prompt 1] [--json] [--samples-out FILE] [--report FILE]

1. Launches a tuning run on the configured (default: embedded) text model through the product's own run
   manager (its own worker process, recorded in the store, visible on the Reward Tuning page), with a
   time budget: sampling (DPO) plus training stop when `--minutes` are spent.
2. Evaluates its adapter on held-out users the run never saw, with the JUDGE audience (not the one it
   was trained on): base model at 1 sample, base best-of-4 picked by the train audience, tuned at 1.
3. Prints judge CTR with 95% intervals, the paired uplift of tuned over base (same prompts), Studio
   acceptance, factuality, diversity, length and KL to the base, then a few before/after samples.
   With --json the last line is one JSON object: each setting's judge CTR with its 95% interval and the
   paired uplifts; --samples-out writes every judged output as a JSON list of
   {group, user_id, item_id, title, body, cta} (group: base, best_of_n or tuned) for any other judge.

The baselines are measured in the same run, on the same prompts and seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import services  # noqa: E402
from tuning import runs  # noqa: E402

RECIPES = {  # the tuned defaults per method for a 15-minute CPU budget (see the README's reward tuning section)
    "best_of_n_sft_dpo": {"learning_rate": 5e-4, "beta": 0.1, "lora_r": 16, "lora_layers": 12, "num_generations": 4,
                          "prompts_per_step": 4, "sft_steps": 400, "max_steps": 400, "save_steps": 10,
                          "eval_steps": 0},  # no live judge: its samples cost a third of the SFT stage's time
    "dpo": {"learning_rate": 5e-4, "beta": 0.1, "lora_r": 16, "lora_layers": 12, "num_generations": 4,
            "prompts_per_step": 4, "max_steps": 400, "save_steps": 10},
    "grpo": {"learning_rate": 5e-4, "beta": 0.02, "lora_r": 16, "lora_layers": 12, "num_generations": 4,
             "prompts_per_step": 2, "max_steps": 400, "save_steps": 10},
    "rloo": {"learning_rate": 5e-4, "beta": 0.02, "lora_r": 16, "lora_layers": 12, "num_generations": 4,
             "prompts_per_step": 2, "max_steps": 400, "save_steps": 10},
}


def config(args: argparse.Namespace) -> dict:
    recipe = dict(RECIPES[args.method])
    for key in ("learning_rate", "beta", "lora_r", "lora_layers", "num_generations", "prompts_per_step",
                "sft_steps", "sft_per_prompt"):
        if getattr(args, key, None) is not None:
            recipe[key] = getattr(args, key)
    return {"method": args.method, "users": args.users, "time_budget_minutes": args.minutes,
            "lora_alpha": 2 * recipe["lora_r"], "seed": args.seed, **recipe}


def train(cfg: dict) -> tuple[str, float]:
    started = time.perf_counter()
    run_id = services.tuning.launch_run(cfg)
    print(f"run {run_id}: {json.dumps(cfg)}", flush=True)
    run = runs.wait(run_id, timeout=cfg["time_budget_minutes"] * 60 + 900)
    minutes = (time.perf_counter() - started) / 60
    if run["status"] != "finished":
        raise SystemExit(f"run {run_id} ended {run['status']}: {run['error']}")
    print(f"trained {run['global_step']} steps in {minutes:.1f} min (incl. model load)", flush=True)
    return run_id, minutes


def report(result: dict) -> None:
    print(f"\nheld-out users: {result['users']}, judge audience, best-of-{result['best_of']} picked by train audience, "
          f"{result['draws']} draws per prompt and setting averaged")
    print(f"{'setting':<11}{'judge CTR':>10} {'95% CI':>17}{'train':>8}{'accept':>8}{'factual':>8}{'dist-2':>8}"
          f"{'self-sim':>9}{'words':>7}")
    for name, s in result["settings"].items():
        ctr = s["judge_ctr"]
        print(f"{name:<11}{ctr['mean']:>10.3%} [{ctr['ci_low']:.3%}, {ctr['ci_high']:.3%}]{s['train_ctr']:>8.3%}"
              f"{s['accept_rate']:>8.0%}{s['factual_rate']:>8.0%}{s['distinct_2']:>8.2f}"
              f"{s['self_similarity'] or 0:>9.2f}{s['mean_words']:>7.1f}")
    for name, u in result["uplift"].items():
        verdict = "significant" if u["ci_low"] > 0 else ("worse" if u["ci_high"] < 0 else "not significant")
        print(f"paired uplift {name}: {u['mean'] * 100:+.3f} points [{u['ci_low'] * 100:+.3f}, "
              f"{u['ci_high'] * 100:+.3f}] ({verdict})")
    print(f"KL(tuned || base): {result['kl_to_base']['per_token']:.3f} nats/token, "
          f"{result['kl_to_base']['per_sequence']:.2f} nats/sequence")
    for row in result["samples"]:
        print(f"\nuser {row['user_id']} - {row['item']} (angle {row['angle']})")
        for name in ("base", "best_of_n", "tuned"):
            print(f"  {name:<10} " + row[name].replace("\n", " | "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", choices=sorted(RECIPES), default="best_of_n_sft_dpo")
    parser.add_argument("--minutes", type=float, default=15.0, help="time budget for sampling + training")
    parser.add_argument("--users", type=int, default=192, help="training users (one prompt each)")
    parser.add_argument("--eval-users", type=int, default=96, help="held-out users judged")
    parser.add_argument("--best-of", type=int, default=4)
    parser.add_argument("--draws", type=int, default=2, help="outputs per prompt and setting, averaged")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run", help="evaluate this finished run instead of training a new one")
    for key, kind in (("learning_rate", float), ("beta", float), ("lora_r", int), ("lora_layers", int),
                      ("num_generations", int), ("prompts_per_step", int), ("sft_steps", int),
                      ("sft_per_prompt", int)):
        parser.add_argument("--" + key.replace("_", "-"), type=kind, default=None, help="override the recipe")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the headline figures")
    parser.add_argument("--samples-out", help="write every judged output to this JSON file")
    parser.add_argument("--report", help="also write the whole evaluation to this JSON file")
    args = parser.parse_args()
    services.common.ensure_demo_data()
    run_id = args.run or train(config(args))[0]
    started = time.perf_counter()
    result = services.tuning.evaluate_run(run_id, users=args.eval_users, best_of=args.best_of, samples=6,
                                          draws=args.draws)
    print(f"evaluated in {(time.perf_counter() - started) / 60:.1f} min", flush=True)
    report(result)
    if args.samples_out:
        Path(args.samples_out).write_text(json.dumps(result["outputs"]), encoding="utf-8")
    if args.report:
        Path(args.report).write_text(json.dumps(result, indent=1), encoding="utf-8")
    if args.json:
        print(json.dumps(headline(result, run_id, args)))


def headline(result: dict, run_id: str, args: argparse.Namespace) -> dict:
    """Each setting's judge CTR with its 95% interval, the paired uplifts, and what the goals compare."""
    settings = result["settings"]
    return {"run_id": run_id, "method": args.method, "seed": args.seed, "minutes": args.minutes,
            "users": result["users"], "best_of": result["best_of"], "draws": result["draws"],
            "judge_ctr": {name: s["judge_ctr"] for name, s in settings.items()},
            "uplift": result["uplift"],
            "tuned_over_base": settings["tuned"]["judge_ctr"]["mean"] / max(settings["base"]["judge_ctr"]["mean"],
                                                                            1e-9),
            "factual_rate": {name: s["factual_rate"] for name, s in settings.items()},
            "accept_rate": {name: s["accept_rate"] for name, s in settings.items()},
            "distinct_2": {name: s["distinct_2"] for name, s in settings.items()}}


if __name__ == "__main__":
    main()
