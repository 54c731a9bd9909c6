"""Reward Tuning: launch, watch, cancel, resume, evaluate, promote and roll back runs (the run manager in
`tuning.runs` does the work, each run in its own process).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

import limits
import settings
from services.common import DEFAULT_DATASET
from services.settings import save_settings
from store import repository
from tuning.configs import MIN_IMPRESSIONS, config_for


def tuning_defaults(method: str = "grpo") -> dict:
    """A method's settings with their defaults (what the page's form starts from, what the CLI leaves out):
    only the settings that method reads (`tuning.configs`)."""
    return config_for({"method": method}).to_dict()


# A first look at a method: a run of a few minutes on a CPU that shows its curves move, not what it can reach.
QUICK_TEST = {"max_steps": 4, "sft_steps": 4, "users": 8, "num_generations": 2, "prompts_per_step": 2,
              "max_completion_length": 32, "time_budget_minutes": 3.0, "eval_steps": 2}


def quick_test(method: str = "grpo") -> dict:
    """The method's defaults with `QUICK_TEST` over those it reads (the page's "Quick test" preset)."""
    defaults = tuning_defaults(method)
    return defaults | {k: v for k, v in QUICK_TEST.items() if k in defaults}


def with_derived_settings(config: dict) -> dict:
    """The settings a form or the CLI does not ask for, derived from those it does: LoRA alpha at twice the
    rank (the ratio of the defaults), and a checkpoint every 10 steps or at the end of a shorter run."""
    derived = dict(config)
    if "lora_r" in derived:
        derived.setdefault("lora_alpha", 2 * int(derived["lora_r"]))
    if "max_steps" in derived:
        derived.setdefault("save_steps", max(1, min(10, int(derived["max_steps"]))))
    return derived


def launch_run(config: dict) -> str:
    """Start a tuning run in its own process; returns the run id at once. Absurd settings (zero or ten million
    steps, a negative learning rate) and an unknown dataset are refused here, before a run is stored."""
    from tuning import runs

    limits.check_all(config, limits.TUNING)
    config = with_derived_settings(config)
    config_for(config)  # the method's own settings and ranges, before anything is stored
    dataset = config.get("dataset") or DEFAULT_DATASET
    repository.require_dataset(dataset)
    if config.get("preferences") == "logged":  # refused now rather than by the worker minutes later
        from tuning import logged

        needed = config.get("min_impressions", MIN_IMPRESSIONS)
        if not logged.pairs(dataset, needed):
            raise logged.no_pairs(dataset, needed)
    return runs.launch(config)


def runs_table() -> pd.DataFrame:
    """Every run with its status (dead workers are marked failed on the way)."""
    from tuning import runs

    rows = [r | {"target": r["config"].get("target", "copy") if r["method"] != "diffusion_dpo" else "image",
                 "judge_uplift": ((r["evaluation"] or {}).get("uplift") or {}).get("tuned_vs_base", {}).get("mean")}
            for r in runs.list_runs()]
    columns = ["id", "method", "target", "status", "global_step", "max_steps", "judge_uplift", "created_at",
               "adapter_path", "error"]
    return pd.DataFrame(rows, columns=columns)


def run_details(run_id: str) -> dict:
    from tuning import runs

    return runs.get(run_id)


def run_metrics(run_id: str) -> pd.DataFrame:
    """One row per logged step (step, attempt, logged_at), one column per metric the trainer reported."""
    from tuning import runs

    return pd.DataFrame(runs.metrics(run_id)).assign(run=run_id)


def cancel_run(run_id: str) -> dict:
    from tuning import runs

    return runs.cancel(run_id)


def resume_run(run_id: str) -> dict:
    from tuning import runs

    return runs.resume(run_id)


def evaluate_run(run_id: str, users: int = 16, best_of: int = 4, samples: int = 5, draws: int = 1) -> dict:
    """Judge a run's adapter on held-out users with the judge audience (never the train one), here and now;
    `draws` outputs per prompt and setting are averaged (less noise, proportionally more sampling)."""
    _check_evaluation(run_id, users, best_of, draws)
    from tuning.evaluate import evaluate_run as judge

    return judge(run_id, users=users, best_of=best_of, samples=samples, draws=draws)


def start_evaluation(run_id: str, users: int = 16, best_of: int = 4, draws: int = 1) -> dict:
    """The same evaluation in a worker process (for the dashboard: minutes of sampling off the page's thread)."""
    from tuning import runs

    _check_evaluation(run_id, users, best_of, draws)
    return runs.evaluate_in_background(run_id, users=users, best_of=best_of, draws=draws)


def _check_evaluation(run_id: str, users: int, best_of: int, draws: int) -> None:
    """Refuse an unknown run or absurd sizes before the seconds it takes to import the training stack."""
    from store import runs as run_store

    run_store.get_run(run_id)
    limits.HELD_OUT_USERS.check(users)
    limits.BEST_OF.check(best_of)
    limits.DRAWS.check(draws)


def promote_run(run_id: str) -> str:
    """Make the Studio generate with this run's adapter (saved in the settings file; next model load)."""
    run = run_details(run_id)
    if not run.get("adapter_path") or not Path(run["adapter_path"]).exists():
        raise ValueError(f"Run '{run_id}' has no adapter to promote ({run['status']})")
    if run["method"] == "diffusion_dpo":  # a LoRA for the art model, which only fits the model it was trained on
        save_settings({"image_adapter": run["adapter_path"]} | ({"image_model": run["config"]["model"]}
                                                                if run["config"].get("model") else {}))
    elif run["config"].get("target") == "brief":  # the brief writer: the Studio writes art direction with the LLM
        save_settings({"brief_adapter": run["adapter_path"], "brief_writer": "llm"})
    else:
        save_settings({"text_adapter": run["adapter_path"]})
    return run["adapter_path"]


def rollback_adapter() -> None:
    """Return the Studio to the base models (no copy, brief or image adapter) and to rule-based briefs."""
    save_settings({key: "" for key in settings.ENV_VARS if key.endswith("_adapter") or key == "brief_writer"})
