"""The best-of-N recipe: sample, SFT on the best accepted sample of each prompt, then DPO from the SFT adapter.

It runs on the embedded SmolLM2 (the tiny model's noise never passes the Studio's checks, so it would leave
nothing to distil), with a few prompts and steps: the assertions are about what each stage receives and
where the next one starts, not about quality.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file

from generation import copy
from store import runs as run_store
from tuning import configs, distill, reward, trainers

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def recipe_run(demo_store: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[configs.BestOfNSettings, Path, dict]:
    folder = tmp_path_factory.mktemp("recipe")
    cfg = configs.config_for({"method": configs.BEST_OF_N_SFT_DPO, "dataset": demo_store, "users": 6,
                              "num_generations": 4, "max_completion_length": 40, "sft_steps": 2, "max_steps": 2,
                              "prompts_per_step": 2, "lora_layers": 2, "learning_rate": 1e-3, "eval_steps": 0,
                              "torch_threads": 1, "save_steps": 1, "sft_per_prompt": 2})
    run_store.create_run("test-recipe", cfg.method, cfg.dataset, cfg.to_dict(), str(folder), "", cfg.total_steps)
    return cfg, folder, trainers.train(cfg, folder, run_id="test-recipe")


def test_sft_learns_only_the_best_accepted_samples_of_each_prompt(recipe_run, demo_store: str) -> None:
    cfg, folder, _ = recipe_run
    data = json.loads((folder / distill.SAMPLES_FILE).read_text())
    shown = reward.catalog(demo_store)
    rows = trainers.targets.rows("copy", demo_store, "train", cfg.users)
    tokenizer = trainers.load_tokenizer(trainers.resolve_model(cfg.model))
    short = trainers.targets.texts("copy", tokenizer, rows, examples=False)  # sampled with the examples, trained
    assert data["best"] and len(data["groups"]) == cfg.users and cfg.sft_per_prompt == 2
    for text, group, scores, row in zip(short, data["groups"], data["scores"], rows, strict=True):
        kept = [r["completion"] for r in data["best"] if r["prompt"] == text]
        assert all(shown.accepted(raw, row["item_id"]) for raw in kept)  # never a sample the Studio would reject
        accepted = [scores[k] for k, raw in enumerate(group) if shown.accepted(raw, row["item_id"])]
        assert sorted((scores[group.index(raw)] for raw in kept), reverse=True) == \
            sorted(accepted, reverse=True)[:2]  # the two best of them, or all when fewer passed
    assert all(p["chosen"] != p["rejected"] for p in data["pairs"])
    assert {r["prompt"] for r in data["best"] + data["pairs"]} <= set(short)  # without them
    assert not any(copy.EXAMPLES[0][2] in r["prompt"] for r in data["best"])


def test_dpo_continues_from_the_sft_adapter_against_a_copy_of_it(recipe_run) -> None:
    cfg, folder, result = recipe_run
    metrics = run_store.metrics("test-recipe")
    assert [m["step"] for m in metrics if "sft_loss" in m] == [1, 2]  # stage 1's curve
    dpo = [m for m in metrics if "loss" in m]
    assert [m["step"] for m in dpo] == [3, 4] and result["global_step"] == cfg.total_steps == 4
    # the reference is a frozen copy of the SFT adapter and the policy starts there: DPO's first loss is log 2
    assert dpo[0]["loss"] == pytest.approx(0.6931, abs=1e-3)
    sft = load_file(folder / "sft" / "adapter" / "adapter_model.safetensors")
    final = load_file(Path(result["adapter_path"]) / "adapter_model.safetensors")
    lora_b = [k for k in sft if "lora_B" in k]
    assert lora_b and any(sft[k].abs().sum() > 0 for k in lora_b)  # SFT moved the zero-initialised adapter
    assert set(final) == set(sft) and any((final[k] - sft[k]).abs().sum() > 0 for k in sft)  # and DPO moved it on
    # both adapters say they were tuned on the short prompt, so the Studio and the evaluation prompt them so
    assert not copy.uses_examples(folder / "sft" / "adapter") and not copy.uses_examples(result["adapter_path"])


def test_a_run_killed_after_sft_resumes_at_dpo_with_its_samples_and_adapter(recipe_run) -> None:
    cfg, folder, _ = recipe_run
    for stage_three in [*folder.glob("checkpoint-*"), folder / "adapter"]:  # as if killed as DPO began
        shutil.rmtree(stage_three)
    samples = (folder / distill.SAMPLES_FILE).stat().st_mtime_ns
    sft = (folder / "sft" / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns
    again = trainers.train(cfg, folder, run_id="test-recipe", resume=False, attempt=2)
    assert again["global_step"] == 4 and Path(again["adapter_path"], "adapter_config.json").exists()
    assert (folder / distill.SAMPLES_FILE).stat().st_mtime_ns == samples  # not drawn again
    assert (folder / "sft" / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns == sft  # not trained again
    second = [m for m in run_store.metrics("test-recipe") if m["attempt"] == 2]
    assert [m["step"] for m in second if "loss" in m] == [3, 4] and not [m for m in second if "sft_loss" in m]


def test_the_recipe_tunes_the_copy_writer_only() -> None:
    with pytest.raises(ValueError, match="tunes the copy writer"):
        configs.config_for({"method": configs.BEST_OF_N_SFT_DPO, "target": "brief"})
    assert configs.config_for({"method": configs.BEST_OF_N_SFT_DPO, "sft_steps": 5, "max_steps": 7}).total_steps == 12
