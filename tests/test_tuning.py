"""Reward tuning: real TRL trainers with LoRA on the tiny model, the run manager's processes, the evaluation.

The tiny model writes noise, so these tests assert behaviour (steps logged, rewards in range, the DPO
objective moving, resume continuing, kills detected, cancels honoured), never wording or quality.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest

import services
from generation import copy
from rewards import audience
from store import runs as run_store
from tuning import configs, evaluate, prompts, reward, runs, sampling, targets, trainers

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest: threads stall a busy machine


@pytest.fixture(scope="module")
def base_config(demo_store: str, tiny_model_dir: Path) -> dict:
    return {"dataset": demo_store, "model": str(tiny_model_dir), "users": 2, "max_completion_length": 12,
            "num_generations": 2, "torch_threads": 1, "seed": 0, "eval_steps": 0}


def _train(config: dict, tmp_path: Path, run_id: str) -> tuple[dict, list[dict]]:
    cfg = configs.config_for(config)
    run_store.create_run(run_id, cfg.method, cfg.dataset, cfg.to_dict(), str(tmp_path), "", cfg.max_steps)
    result = trainers.train(cfg, tmp_path, run_id=run_id)
    return result, [m for m in run_store.metrics(run_id) if "loss" in m]


@pytest.fixture(scope="module")
def grpo_run(base_config: dict, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, list[dict]]:
    folder = tmp_path_factory.mktemp("grpo")
    return _train(base_config | {"method": "grpo", "max_steps": 2}, folder, "test-grpo")


def test_config_defaults_keep_a_kl_term_and_lora() -> None:
    for method in ("grpo", "rloo"):
        assert configs.config_for({"method": method}).beta > 0
    cfg = configs.config_for({"method": "dpo"})
    assert cfg.beta == configs.DPOSettings.BETA and cfg.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    with pytest.raises(ValueError, match="Unknown tuning settings: lr"):
        configs.config_for({"method": "grpo", "lr": 1})
    with pytest.raises(ValueError, match="Unknown method"):
        configs.config_for({"method": "ppo"})
    with pytest.raises(TypeError, match="config_for"):
        configs.TuningConfig(method="grpo")


@pytest.mark.parametrize(("values", "message"), [
    ({"method": "grpo", "beta": 10_000}, "GRPO's KL coefficient \\(beta\\) must be a number from 0 to 1"),
    ({"method": "rloo", "beta": 2}, "RLOO's KL coefficient \\(beta\\) must be a number from 0 to 1"),
    ({"method": "dpo", "beta": 0}, "DPO's beta must be a number from 0.001 to 10"),
    ({"method": "diffusion_dpo", "beta": 0.1}, "Diffusion-DPO's beta must be a number from 1 to 10000"),
    ({"method": "diffusion_dpo", "target": "copy"}, "Diffusion-DPO does not use target"),
    ({"method": "diffusion_dpo", "sft_steps": 5, "eval_steps": 2}, "Diffusion-DPO does not use eval_steps, sft_steps"),
    ({"method": "grpo", "sft_steps": 5}, "GRPO does not use sft_steps"),
    ({"method": "rloo", "preferences": "sampled"}, "RLOO does not use preferences"),
    ({"method": "best_of_n_sft_dpo", "min_impressions": 30}, "Best-of-N SFT \\+ DPO does not use min_impressions"),
])
def test_each_method_has_its_own_settings_and_ranges(values: dict, message: str) -> None:
    """One settings class per method: a key the method would ignore is refused, not dropped, and beta is checked
    on the method's own scale, in a message that names the method and the range."""
    with pytest.raises(ValueError, match=message):
        configs.config_for(values)
    with pytest.raises(ValueError, match=message):
        services.tuning.launch_run(values)


def test_a_stored_run_keeps_only_what_its_method_reads() -> None:
    """A run stored by an older version kept every key for every method: resuming it drops what its method
    ignores (it was checked at launch) instead of failing."""
    old = {"method": "diffusion_dpo", "target": "copy", "sft_steps": 20, "preferences": "sampled", "beta": 5000.0}
    cfg = configs.config_for(old, stored=True)
    assert isinstance(cfg, configs.DiffusionDPOSettings) and cfg.beta == 5000.0
    assert set(cfg.to_dict()) == set(configs.settings_of("diffusion_dpo"))


def test_prompt_split_is_deterministic_and_disjoint(demo_store: str, tiny_model_dir: Path) -> None:
    ids = [str(n) for n in range(1, 301)]
    split = prompts.split_users(ids)
    assert split == prompts.split_users(ids)
    assert not set(split["train"]) & set(split["held_out"])
    assert 0.7 < len(split["train"]) / len(ids) < 0.9
    tokenizer = trainers.load_tokenizer(str(tiny_model_dir))
    data = targets.prompt_dataset("copy", demo_store, tokenizer, "held_out", users=3)
    assert set(data.column_names) == {"prompt", "user_id", "item_id"}
    catalog = services.common.catalog(demo_store)
    assert all(p.endswith(copy.answer_start(catalog.loc[i].to_dict())) for p, i in zip(data["prompt"],
                                                                                       data["item_id"], strict=True))
    assert all(prompts.split_of(u) == "held_out" for u in data["user_id"])
    liked = prompts.liked_items(demo_store, data["user_id"], per_user=1)
    assert [liked[u][0] for u in data["user_id"]] == data["item_id"]


def test_the_click_reward_reads_each_completion_once_as_the_studio_parses_it(demo_store: str) -> None:
    """Parsed copy is scored on the fields the Studio reads (no second parser); a completion the Studio cannot
    parse keeps exactly MALFORMED_FACTOR of its raw text's score, and the gate adds no second penalty to it."""
    click = reward.click_reward(demo_store)
    good = " a sci-fi adventure for the whole family\nBody: Rebels take on an empire in 1977."
    bad = " ???"
    scores = click([good, [{"role": "assistant", "content": good}], bad], user_id=["1"] * 3, item_id=["50"] * 3)
    item = reward.catalog(demo_store).items["50"]
    fields = copy.parse(good, reward.catalog(demo_store).default_cta, copy.answer_start(item))
    train = audience.audience("train", demo_store)
    impressions = [audience.Impression("1", "50", fields),
                   audience.Impression("1", "50", {"title": "", "body": copy.answer_start(item) + bad, "cta": ""})]
    expected = train.probabilities(impressions)
    assert scores[0] == pytest.approx(expected[0]) and scores[1] == pytest.approx(scores[0])  # chat form alike
    assert scores[2] == pytest.approx(audience.MALFORMED_FACTOR * expected[1]) and scores[2] < scores[0]
    gated = reward.click_reward(demo_store, studio_gate=True)([bad], user_id=["1"], item_id=["50"])
    assert gated == pytest.approx([scores[2]])
    with pytest.raises(ValueError, match="item_id"):
        click([good], user_id=["1"])


def test_studio_gate_discounts_exactly_the_copy_the_studio_would_reject(demo_store: str) -> None:
    shown = " a sci-fi adventure for sci-fi fans\nBody: Rebels take on an empire in 1977.\nCTA: Watch tonight"
    rejected = [" The Force Awaits\nBody: A sci-fi adventure for the whole family.\nCTA: Watch tonight",  # invented
                " a classic\nBody: Jurassic Park fans, this 1993 classic is for you.\nCTA: Watch tonight",  # facts
                " a ride\nBody: Viewer: loves Thriller. A sci-fi adventure.\nCTA: Watch tonight"]  # prompt leak
    texts = [shown, *rejected]
    users, items = ["1"] * len(texts), ["50"] * len(texts)
    plain = reward.click_reward(demo_store)(texts, user_id=users, item_id=items)
    gated = reward.click_reward(demo_store, studio_gate=True)(texts, user_id=users, item_id=items)
    assert gated[0] == pytest.approx(plain[0])
    assert gated[1:] == pytest.approx([reward.REJECTED_FACTOR * p for p in plain[1:]])
    catalog = reward.catalog(demo_store)
    assert catalog.accepted(shown, "50") and not any(catalog.accepted(t, "50") for t in rejected)
    assert not catalog.factual(rejected[0], "50") and not catalog.factual(rejected[1], "50")  # untrue
    assert catalog.factual(shown, "50")


def test_paired_uplift_is_tighter_than_independent_intervals() -> None:
    control = [0.01, 0.05, 0.02, 0.08, 0.03, 0.04]
    treated = [c + 0.004 + 0.001 * (k % 2) for k, c in enumerate(control)]  # small, consistent gain per prompt
    uplift = evaluate.paired_uplift(treated, control)
    assert uplift["mean"] == pytest.approx(0.0045) and uplift["ci_low"] > 0  # clear when paired
    assert evaluate.mean_ci(treated)["ci_low"] < evaluate.mean_ci(control)["ci_high"]  # overlapping when not
    worse = evaluate.paired_uplift(control, treated)
    assert worse["ci_high"] < 0 and worse["mean"] == pytest.approx(-0.0045)  # a loss is not clipped to zero


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


def test_a_resumed_dpo_run_trains_on_the_pairs_it_sampled_before(base_config: dict, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    config = base_config | {"method": "dpo", "max_steps": 2, "prompts_per_step": 2, "num_generations": 3}
    _train(config, tmp_path, "test-dpo-resume")
    sampled = json.loads((tmp_path / trainers.PAIRS_FILE).read_text(encoding="utf-8"))
    assert sampled and all({"prompt", "chosen", "rejected"} <= set(p) for p in sampled)

    def sample_again(*_args, **_kwargs):
        raise AssertionError("a resumed run sampled its pairs again")

    monkeypatch.setattr(trainers, "dpo_pairs", sample_again)
    again = trainers.build_trainer(configs.config_for(config | {"seed": 99}), tmp_path)
    assert len(again.train_dataset) == len(sampled)  # trained on exactly the stored pairs


def test_the_time_budget_counts_the_time_earlier_attempts_spent(tmp_path: Path) -> None:
    budget = trainers.Budget(tmp_path)
    assert budget.deadline(0) is None
    assert budget.deadline(1.0) == pytest.approx(time.monotonic() + 60, abs=1)  # a first attempt: all of it
    (tmp_path / trainers.Budget.FILE).write_text(json.dumps({"spent_seconds": 50}), encoding="utf-8")
    resumed = trainers.Budget(tmp_path)
    assert resumed.deadline(1.0) == pytest.approx(time.monotonic() + 10, abs=1)  # 50 of 60 s already spent
    resumed.record()
    assert json.loads((tmp_path / trainers.Budget.FILE).read_text())["spent_seconds"] >= 50
    (tmp_path / trainers.Budget.FILE).write_text('{"spent_sec', encoding="utf-8")  # cut off by a kill
    assert trainers.Budget(tmp_path).before == 0.0


def test_a_resumed_run_with_its_budget_spent_stops_at_once(base_config: dict, tmp_path: Path) -> None:
    config = base_config | {"method": "grpo", "max_steps": 500, "save_steps": 500, "time_budget_minutes": 0.5}
    (tmp_path / trainers.Budget.FILE).write_text(json.dumps({"spent_seconds": 29.9}), encoding="utf-8")
    result, logged = _train(config, tmp_path, "test-budget-spent")
    assert result["global_step"] == 1 and len(logged) == 1  # the step that found the budget spent, no more
    assert json.loads((tmp_path / trainers.Budget.FILE).read_text())["spent_seconds"] > 29.9


def test_time_budget_stops_training_and_keeps_the_adapter(base_config: dict, tmp_path: Path) -> None:
    config = base_config | {"method": "grpo", "max_steps": 500, "save_steps": 500, "time_budget_minutes": 0.02}
    result, logged = _train(config, tmp_path, "test-budget")
    assert 1 <= result["global_step"] < 500 and len(logged) == result["global_step"]
    assert (Path(result["adapter_path"]) / "adapter_config.json").exists()
    assert trainers.last_checkpoint(tmp_path).endswith(f"checkpoint-{result['global_step']}")  # saved on stop


def test_held_out_judge_and_tensorboard_log_during_training(base_config: dict, tmp_path: Path) -> None:
    config = base_config | {"method": "grpo", "max_steps": 3, "eval_steps": 2, "eval_users": 3,
                            "report_to": ["tensorboard"]}
    _train(config, tmp_path, "test-judge")
    judged = [(m["step"], m["judge_ctr"]) for m in run_store.metrics("test-judge") if "judge_ctr" in m]
    assert [step for step, _ in judged] == [0, 2, 3]  # the base model, every 2 steps, and the last step
    assert all(0 <= ctr <= 1 for _, ctr in judged)
    assert list(tmp_path.glob("runs/*/events.out.tfevents.*"))  # TensorBoard's event file in the run folder
    with pytest.raises(ValueError, match="Unknown report_to: wandb"):
        configs.config_for({"method": "grpo", "report_to": ["wandb"]})


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
                               max_new_tokens=12, samples=2, draws=2)
    assert set(report["judge_ctr"]) == {"base", "best_of_n", "tuned"} and report["draws"] == 2
    assert all(len(v) == 4 for v in report["judge_per_prompt"].values())
    # each pick is its group's best by the train reward, so the picks beat the pool they came from on it
    assert report["settings"]["best_of_n"]["train_ctr"] >= report["settings"]["base"]["train_ctr"]
    for name, setting in report["settings"].items():
        ctr = setting["judge_ctr"]
        assert 0 <= ctr["ci_low"] <= ctr["mean"] <= ctr["ci_high"] <= 1 and ctr["n"] == 4, name
        assert 0 <= setting["factual_rate"] <= 1 and 0 <= setting["distinct_2"] <= 1
    assert all(prompts.split_of(row["user_id"]) == "held_out" for row in report["samples"])
    assert len(report["samples"]) == 2 and set(report["kl_to_base"]) == {"per_sequence", "per_token"}
    # every judged output, for another judge: base@1's pool (2 draws x best-of-2), the picks, the tuned draws
    counts = {g: sum(o["group"] == g for o in report["outputs"]) for g in ("base", "best_of_n", "tuned")}
    assert counts == {"base": 4 * 4, "best_of_n": 2 * 4, "tuned": 2 * 4}
    assert all(set(o) == {"group", "user_id", "item_id", "title", "body", "cta"} for o in report["outputs"])
    rows = targets.rows("copy", demo_store, "held_out", 4)
    assert [(o["user_id"], o["item_id"]) for o in report["outputs"][:4]] == [(r["user_id"], r["item_id"])
                                                                            for r in rows]
    json.dumps(report, allow_nan=False)


def test_evaluation_runs_in_a_worker_and_a_dead_one_is_reported(grpo_run, base_config: dict) -> None:
    result, _ = grpo_run
    run_id = runs.launch(base_config | {"method": "grpo", "max_steps": 1})
    assert runs.wait(run_id, timeout=240)["status"] == "finished"
    run_store.create_run("test-no-adapter", "grpo", base_config["dataset"], {}, "/nonexistent", "", 1)
    with pytest.raises(ValueError, match="no adapter"):
        runs.evaluate_in_background("test-no-adapter")
    started = runs.evaluate_in_background(run_id, users=2, best_of=2)
    assert started["evaluation"]["status"] == "running" and started["evaluation"]["pid"] != os.getpid()
    with pytest.raises(ValueError, match="already being evaluated"):
        runs.evaluate_in_background(run_id, users=2, best_of=2)
    deadline = time.monotonic() + 240
    while runs.get(run_id)["evaluation"]["status"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.5)
    evaluation = runs.get(run_id)["evaluation"]
    assert evaluation["status"] == "finished" and evaluation["users"] == 2, evaluation.get("error")
    assert set(evaluation["uplift"]) == {"tuned_vs_base", "tuned_vs_best_of_n"}
    killed = runs.evaluate_in_background(run_id, users=2, best_of=2)["evaluation"]["pid"]
    os.kill(killed, signal.SIGKILL)
    _reap_until_dead(run_id, killed)
    assert runs.get(run_id)["evaluation"]["status"] == "failed"


def _reap_until_dead(run_id: str, pid: int) -> None:
    deadline = time.monotonic() + 30
    while (runs.refresh(run_id)["evaluation"] or {}).get("status") == "running":
        assert time.monotonic() < deadline, f"process {pid} still counted as alive"
        time.sleep(0.2)


def test_runs_whose_worker_never_started_or_whose_pid_was_reused_are_failed(base_config: dict,
                                                                             demo_database: str) -> None:
    from datetime import UTC, datetime, timedelta

    from store.db import transaction
    from store.schema import Run

    run_store.create_run("test-never", "grpo", base_config["dataset"], {}, "/tmp", "", 1)
    assert runs.refresh("test-never")["status"] == "queued"  # just created: its worker may still be starting
    with transaction() as s:
        s.get(Run, "test-never").created_at = datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=10)
    assert runs.refresh("test-never")["status"] == "failed"
    run_store.create_run("test-reused", "grpo", base_config["dataset"], {}, "/tmp", "", 1)
    run_store.transition("test-reused", "running", ("queued",), pid=os.getpid())  # alive, but not a worker
    assert runs.refresh("test-reused")["status"] == "failed"


def test_accelerate_runs_one_run_over_two_processes(base_config: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """The multi-GPU path, on two CPU processes: same code, one set of metrics, one adapter."""
    monkeypatch.setenv("ADLOOP_TRAIN_PROCESSES", "2")
    assert runs.worker_command("x")[2:4] == ["accelerate.commands.launch", "--num_processes"]
    assert runs.worker_command("x", "--evaluate", "{}")[1:3] == ["-m", "tuning.worker"]  # evaluation: one process
    run_id = runs.launch(base_config | {"method": "grpo", "max_steps": 2, "save_steps": 2, "prompts_per_step": 1})
    done = runs.wait(run_id, timeout=300)
    assert done["status"] == "finished", runs.log_tail(done)
    assert [m["step"] for m in runs.metrics(run_id) if "loss" in m] == [1, 2]  # logged by the main process only
    assert (Path(done["adapter_path"]) / "adapter_config.json").exists()
    monkeypatch.setenv("ADLOOP_TRAIN_PROCESSES", "zero")
    with pytest.raises(ValueError, match="ADLOOP_TRAIN_PROCESSES must be a positive whole number"):
        runs.train_processes()


def test_brief_writer_is_tuned_on_banner_clicks_and_judged(base_config: dict, demo_store: str, tmp_path: Path,
                                                           tiny_model_dir: Path) -> None:
    from tuning import brief_tuning

    config = base_config | {"method": "grpo", "target": "brief", "max_steps": 2, "max_completion_length": 16}
    result, logged = _train(config, tmp_path, "test-brief")
    assert [m["step"] for m in logged] == [1, 2]
    assert all(0.0 <= m["reward"] <= 1.0 for m in logged) and "rewards/train_banner_click/mean" in logged[0]
    tokenizer = trainers.load_tokenizer(str(tiny_model_dir))
    data = targets.prompt_dataset("brief", demo_store, tokenizer, "train", users=2)
    assert all(p.endswith(brief_tuning.ANSWER_PREFIX) for p in data["prompt"])
    report = evaluate.evaluate(result["adapter_path"], demo_store, str(tiny_model_dir), users=3, best_of=2,
                               max_new_tokens=16, samples=2, target="brief")
    assert report["target"] == "brief" and set(report["settings"]["tuned"]) >= {"judge_ctr", "parse_rate",
                                                                                  "distinct_moods"}
    assert all(row["tuned"].startswith(brief_tuning.ANSWER_PREFIX) for row in report["samples"])
    with pytest.raises(ValueError, match="Unknown target 'logo'"):
        configs.config_for({"method": "rloo", "target": "logo"})


@pytest.mark.embedded
def test_copies_share_the_prefill_and_decode_as_if_sampled_one_by_one(demo_store: str,
                                                                      embedded_model_dir: Path) -> None:
    """The cached prompt (left-padded, positions from the mask) must continue exactly like a full prompt: with a
    near-zero temperature every copy equals the model's greedy answer to its own prompt. The real model, because
    a random tiny one is too insensitive to positions to catch a shifted prefill."""
    path = str(embedded_model_dir)
    tokenizer, model = trainers.load_tokenizer(path), trainers.load_policy(path).eval()
    texts = targets.texts("copy", tokenizer, targets.rows("copy", demo_store, "held_out", 3))
    texts[1] = texts[1][60:]  # a shorter prompt, so the batch is padded
    tokenizer.padding_side = "left"
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    greedy = model.generate(**enc, max_new_tokens=10, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    expected = [tokenizer.decode(row[enc["input_ids"].shape[1]:], skip_special_tokens=True) for row in greedy]
    copies, _, completions = sampling.sample(model, tokenizer, texts, 10, 1e-5, seed=0, copies=3, batch=6)
    assert copies == [answer for answer in expected for _ in range(3)]
    assert all(0 < len(c) <= 10 for c in completions)


def test_the_settings_a_form_does_not_ask_for_are_derived_in_one_place() -> None:
    derived = services.tuning.with_derived_settings({"lora_r": 8, "max_steps": 4})
    assert (derived["lora_alpha"], derived["save_steps"]) == (16, 4)
    assert services.tuning.with_derived_settings({"max_steps": 400})["save_steps"] == 10
    kept = services.tuning.with_derived_settings({"lora_r": 8, "lora_alpha": 8, "max_steps": 50, "save_steps": 25})
    assert (kept["lora_alpha"], kept["save_steps"]) == (8, 25)


def test_every_target_is_promoted_through_the_promote_path_and_the_studio_writes_after_a_rollback(
        demo_store: str, tiny_llm: str, tiny_model_dir: Path, tiny_diffusion_dir: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    lora = tmp_path / "lora"
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                   LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)).save_pretrained(lora)
    for run_id, method, config in (("p-text", "dpo", {}), ("p-brief", "dpo", {"target": "brief"}),
                                   ("p-image", "diffusion_dpo", {"model": str(tiny_diffusion_dir)})):
        run_store.create_run(run_id, method, demo_store, config, str(tmp_path / run_id), "", 1)
        run_store.update_run(run_id, adapter_path=str(lora))
    monkeypatch.setenv("ADLOOP_IMAGE_MODEL", "procedural")  # the banners of this test's generations
    shown = services.settings.environment

    assert services.tuning.promote_run("p-text") == str(lora)
    assert shown()["settings"]["text_adapter"] == str(lora)
    written = services.studio.generate(demo_store, "50", user_id="4", n=1, seed=2)
    assert {v["adapter"] for v in written} == {str(lora)}  # the Studio writes with the promoted adapter
    services.tuning.promote_run("p-brief")
    assert (shown()["settings"]["brief_adapter"], shown()["settings"]["brief_writer"]) == (str(lora), "llm")
    services.tuning.promote_run("p-image")
    monkeypatch.delenv("ADLOOP_IMAGE_MODEL")
    assert (shown()["settings"]["image_adapter"], shown()["settings"]["image_model"]) == (str(lora),
                                                                                          str(tiny_diffusion_dir))

    services.tuning.rollback_adapter()
    after = shown()["settings"]
    assert (after["text_adapter"], after["brief_adapter"], after["image_adapter"]) == ("", "", "")
    assert after["brief_writer"] == "rules"
    monkeypatch.setenv("ADLOOP_IMAGE_MODEL", "procedural")
    written = services.studio.generate(demo_store, "50", user_id="4", n=1, seed=3)
    assert written and {v["adapter"] for v in written} == {None}  # back on the base model
    with pytest.raises(ValueError, match="no adapter to promote"):
        run_store.update_run("p-text", adapter_path=str(tmp_path / "gone"))
        services.tuning.promote_run("p-text")


@pytest.mark.embedded
def test_the_evaluation_and_the_samplers_draw_under_the_studios_rules(demo_store: str, embedded_model_dir: Path,
                                                                      tmp_path: Path) -> None:
    """Tuned@1 and its baselines must be what the Studio would draw: copy rows carry the writer's rules (the words
    its checks would reject about the row's item, no loops, two lines), briefs none; and both sampling paths,
    transformers (a model being trained) and llama.cpp (fixed weights), keep every avoided word out. Here the
    avoided words are those the unruled draw wrote first, so the rules have something to keep out."""
    from generation import models, safety, writer

    rows = targets.rows("copy", demo_store, "held_out", 3)
    rules = targets.rules("copy", demo_store, rows)
    shop = reward.catalog(demo_store)
    assert rules.avoid == [safety.words_to_avoid(shop.items[r["item_id"]], shop.categories, shop.brand) for r in rows]
    assert (rules.no_repeat, rules.lines) == (writer.NO_REPEAT, copy.ANSWER_LINES)
    assert rules.numbers == [safety.numbers_to_allow(shop.items[r["item_id"]], shop.brand) for r in rows]
    assert targets.rules("brief", demo_store, rows) == sampling.Rules()
    llm = models.load_text_model(str(embedded_model_dir), "cpu", tmp_path)
    assert llm.fast is not None, llm.engine_note
    texts = targets.texts("copy", llm.tokenizer, rows)
    free, _, _ = sampling.sample_on(llm, texts, 16, 0.9, seed=3, copies=2)
    words = [[w for w in (free[2 * k] + " " + free[2 * k + 1]).replace(",", " ").split() if w.isalpha()][:3]
             for k in range(len(rows))]
    own = sampling.Rules(words, writer.NO_REPEAT, copy.ANSWER_LINES, [frozenset({"2000"})] * len(rows))
    drawn = {"llama.cpp": sampling.sample_on(llm, texts, 16, 0.9, seed=3, copies=2, rules=own)[2],
             "transformers": sampling.sample(llm.model, llm.tokenizer, texts, 16, 0.9, seed=3, copies=2,
                                             rules=own)[2]}
    for path, answers in drawn.items():
        for k, answer in enumerate(answers):
            avoided = models.avoided_tokens(llm.tokenizer, words[k // 2])
            assert avoided and not set(answer.tolist()) & avoided.tokens, (path, words[k // 2],
                                                                    llm.tokenizer.decode(answer))
            numbers = re.findall(r"\d+", llm.tokenizer.decode(answer))  # only "2000" (or its start at the cap)
            assert all("2000".startswith(n) for n in numbers) and numbers[:-1] == ["2000"] * (len(numbers) - 1)


def test_a_worker_that_ends_is_reaped_without_anyone_asking_about_its_run(base_config: dict) -> None:
    """A worker that ends on its own (here it fails at once: no such model) is reaped by the process that started
    it straight away, not left a zombie until a page happens to ask about its run. The run is read from the
    store directly: `runs.get`, `runs.wait` and the pages would reap it while checking."""
    run_id = runs.launch(base_config | {"model": str(Path("/nonexistent") / "model")})
    pid = run_store.get_run(run_id)["pid"]
    deadline = time.monotonic() + 120
    while run_store.get_run(run_id)["status"] != "failed":
        assert time.monotonic() < deadline, run_store.get_run(run_id)
        time.sleep(0.2)
    stat = Path(f"/proc/{pid}/stat")
    while stat.exists() and time.monotonic() < deadline:  # the worker writes its status, then exits
        time.sleep(0.1)
    assert not stat.exists(), f"worker {pid} is still in the process table: {stat.read_text()}"


def test_kl_to_the_base_is_zero_for_the_base_and_never_negative(tiny_model_dir: Path) -> None:
    """The evaluation's KL is the exact KL between the two next-token distributions at each sampled position:
    0 for an adapter that changes nothing, positive for one that does, whatever the samples (the mean log-ratio
    of sampled tokens it replaced read negative on the page)."""
    import torch
    from peft import LoraConfig, get_peft_model

    prompts = [torch.tensor([1, 2, 3, 4, 5]), torch.tensor([9, 8, 7])]
    completions = [torch.tensor([11, 12, 13]), torch.tensor([21, 22])]
    unchanged = get_peft_model(trainers.load_policy(str(tiny_model_dir)), LoraConfig(r=4, target_modules=["q_proj"]))
    assert evaluate.kl_to_base(unchanged, prompts, completions)["per_token"] == pytest.approx(0.0, abs=1e-6)
    for seed in range(3):
        torch.manual_seed(seed)
        moved = get_peft_model(trainers.load_policy(str(tiny_model_dir)),
                               LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
        kl = evaluate.kl_to_base(moved, prompts, completions)
        assert kl["per_token"] > 0 and kl["per_sequence"] == pytest.approx(kl["per_token"] * 5 / 2)
