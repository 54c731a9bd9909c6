"""Reward tuning: real TRL trainers with LoRA on the tiny model, the run manager's processes, the evaluation.

The tiny model writes noise, so these tests assert behaviour (steps logged, rewards in range, the DPO
objective moving, resume continuing, kills detected, cancels honoured), never wording or quality.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from store import runs as run_store
from tuning import evaluate, prompts, runs, trainers


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a busy 2-core machine two spinning threads make tiny-model steps 20x slower."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def base_config(demo_store: str, tiny_model_dir: Path) -> dict:
    return {"dataset": demo_store, "model": str(tiny_model_dir), "users": 2, "max_completion_length": 12,
            "num_generations": 2, "torch_threads": 1, "seed": 0}


def _train(config: dict, tmp_path: Path, run_id: str) -> tuple[dict, list[dict]]:
    cfg = trainers.TuningConfig.from_dict(config)
    run_store.create_run(run_id, cfg.method, cfg.dataset, cfg.to_dict(), str(tmp_path), "", cfg.max_steps)
    result = trainers.train(cfg, tmp_path, run_id=run_id)
    return result, [m for m in run_store.metrics(run_id) if "loss" in m]


@pytest.fixture(scope="module")
def grpo_run(base_config: dict, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, list[dict]]:
    folder = tmp_path_factory.mktemp("grpo")
    return _train(base_config | {"method": "grpo", "max_steps": 2}, folder, "test-grpo")


def test_config_defaults_keep_a_kl_term_and_lora() -> None:
    for method in ("grpo", "rloo"):
        assert trainers.TuningConfig(method=method).beta > 0
    cfg = trainers.TuningConfig(method="dpo")
    assert cfg.beta == trainers.DEFAULT_BETA["dpo"] and cfg.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    with pytest.raises(ValueError, match="Unknown tuning settings"):
        trainers.TuningConfig.from_dict({"method": "grpo", "lr": 1})
    with pytest.raises(ValueError, match="Unknown method"):
        trainers.TuningConfig(method="ppo")


def test_prompt_split_is_deterministic_and_disjoint(demo_store: str, tiny_model_dir: Path) -> None:
    ids = [str(n) for n in range(1, 301)]
    split = prompts.split_users(ids)
    assert split == prompts.split_users(ids)
    assert not set(split["train"]) & set(split["held_out"])
    assert 0.7 < len(split["train"]) / len(ids) < 0.9
    tokenizer = trainers.load_tokenizer(str(tiny_model_dir))
    data = prompts.prompt_dataset(demo_store, tokenizer, "held_out", users=3)
    assert set(data.column_names) == {"prompt", "user_id", "item_id"}
    assert all(p.endswith(prompts.ANSWER_PREFIX) for p in data["prompt"])
    assert all(prompts.split_of(u) == "held_out" for u in data["user_id"])
    liked = prompts.liked_items(demo_store, data["user_id"], per_user=1)
    assert [liked[u][0] for u in data["user_id"]] == data["item_id"]


def test_creative_text_scores_parsed_copy_above_malformed(demo_store: str) -> None:
    reward = trainers.click_reward(demo_store)
    good = " Star Wars: The Force Awaits\nBody: A space adventure for the whole family.\nCTA: Watch tonight"
    scores = reward([good, " ???"], user_id=["1", "1"], item_id=["50", "50"])
    assert all(0 <= s <= 1 for s in scores) and scores[0] > scores[1]


@pytest.mark.parametrize("method", ["grpo", "rloo"])
def test_online_methods_log_rewards_and_kl(method: str, grpo_run, base_config: dict, tmp_path: Path) -> None:
    result, logged = grpo_run if method == "grpo" else _train(base_config | {"method": method, "max_steps": 2},
                                                             tmp_path, f"test-{method}")
    assert [m["step"] for m in logged] == [1, 2]
    assert all(0.0 <= m["reward"] <= 1.0 for m in logged)
    assert all("kl" in m and "loss" in m for m in logged)
    assert result["global_step"] == 2
    assert (Path(result["adapter_path"]) / "adapter_config.json").exists()


def test_dpo_moves_policy_toward_chosen(base_config: dict, tmp_path: Path) -> None:
    # two prompts, batch of two: every step sees the same pairs, so the objective must improve
    config = base_config | {"method": "dpo", "max_steps": 4, "learning_rate": 5e-3, "prompts_per_step": 2,
                            "num_generations": 3}
    result, logged = _train(config, tmp_path, "test-dpo")
    losses, margins = [m["loss"] for m in logged], [m["rewards/margins"] for m in logged]
    assert len(logged) == 4 and result["global_step"] == 4
    assert losses[0] == pytest.approx(0.6931, abs=1e-3)  # the adapter starts as the reference
    assert losses[-1] < losses[0] and margins[-1] > margins[0]


def _wait_for(condition, run_id: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        run = runs.refresh(run_id)
        assert run["status"] in run_store.ACTIVE, run.get("error")
        assert time.monotonic() < deadline, f"timed out; run is {run['status']}"
        time.sleep(0.3)


def test_killed_run_is_failed_and_resumes_from_its_checkpoint(base_config: dict) -> None:
    run_id = runs.launch(base_config | {"method": "grpo", "max_steps": 4, "save_steps": 2})
    folder = runs.run_folder(run_id)
    _wait_for(lambda: (folder / "checkpoint-2" / "trainer_state.json").exists(), run_id)
    os.kill(runs.get(run_id)["pid"], signal.SIGKILL)
    _wait_for_status(run_id, "failed")
    failed = runs.refresh(run_id)
    assert failed["pid"] is None and "ended without reporting" in failed["error"]
    assert failed["finished_at"] is not None
    assert not run_store.transition(run_id, "finished", ("running",))  # a dead run cannot be finished late
    assert runs.get(run_id)["checkpoint"].endswith("checkpoint-2")

    runs.resume(run_id)
    done = runs.wait(run_id, timeout=240)
    assert done["status"] == "finished", done["error"]
    assert done["global_step"] == 4 and done["attempts"] == 2
    resumed = [m["step"] for m in runs.metrics(run_id) if m["attempt"] == 2 and "loss" in m]
    assert resumed == [3, 4]  # continued after checkpoint 2, not from step 0
    assert Path(done["adapter_path"], "adapter_config.json").exists()
    with pytest.raises(ValueError):
        runs.resume(run_id)


def _wait_for_status(run_id: str, status: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while runs.refresh(run_id)["status"] != status:
        assert time.monotonic() < deadline, runs.refresh(run_id)
        time.sleep(0.2)


def test_cancel_stops_a_run(base_config: dict) -> None:
    run_id = runs.launch(base_config | {"method": "grpo", "max_steps": 500, "save_steps": 500})
    _wait_for(lambda: any("loss" in m for m in runs.metrics(run_id)), run_id)
    runs.cancel(run_id)
    done = runs.wait(run_id, timeout=120)
    assert done["status"] == "cancelled" and done["cancel_requested"]
    assert 1 <= done["global_step"] < 500
    assert Path(done["adapter_path"], "adapter_config.json").exists()
    with pytest.raises(ValueError, match="already ended"):
        runs.cancel(run_id)
    assert run_id in [r["id"] for r in runs.list_runs()]


def test_evaluate_compares_base_best_of_n_and_tuned(grpo_run, demo_store: str, tiny_model_dir: Path) -> None:
    result, _ = grpo_run
    report = evaluate.evaluate(result["adapter_path"], demo_store, str(tiny_model_dir), users=4, best_of=2,
                               max_new_tokens=12, samples=2)
    assert set(report["judge_ctr"]) == {"base", "best_of_n", "tuned"}
    for name, setting in report["settings"].items():
        ctr = setting["judge_ctr"]
        assert 0 <= ctr["ci_low"] <= ctr["mean"] <= ctr["ci_high"] <= 1 and ctr["n"] == 4, name
        assert 0 <= setting["factual_rate"] <= 1 and 0 <= setting["distinct_2"] <= 1
    assert all(prompts.split_of(row["user_id"]) == "held_out" for row in report["samples"])
    assert len(report["samples"]) == 2 and set(report["kl_to_base"]) == {"per_sequence", "per_token"}
    json.dumps(report, allow_nan=False)
