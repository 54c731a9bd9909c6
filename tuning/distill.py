"""Best-of-N distillation, then preference refinement: the recipe that makes one tuned sample worth reranking
several base samples (rejection-sampling fine-tuning as in RAFT and ReST, followed by DPO on best vs worst of
the same samples, as BoNBoN combines them).

1. Sampling: `num_generations` answers per training prompt from the base model, on the Studio's engine with
   the Studio's nucleus and stop (`trainers.sample_groups`), scored once by the Studio-gated train reward.
2. SFT (TRL's `SFTTrainer`, LoRA through PEFT): each prompt's best `sft_per_prompt` answers among those that
   pass every Studio check, as completions of its prompt; the model learns to write at once what reranking
   keeps, and with more than one answer per prompt it keeps more than one way of saying it.
3. DPO (TRL's `DPOTrainer`) continues the SFT adapter on best vs worst of the same samples. Given a model
   that already carries an adapter, TRL makes a frozen copy of it the reference, so DPO refines the distilled
   policy instead of pulling it back to the base model.

The base model samples with the Studio's prompt, worked examples and all; SFT and DPO train on the same
answers under the short prompt (no examples, a fifth of the tokens), so the examples are distilled into the
adapter with the reranking, a training step costs a fraction as much, and the tuned model is prompted short
wherever it writes (its adapter folder says so: `generation.copy.mark_short_prompt`).

Each stage leaves its result in the run folder (the scored samples in `best_of_n.json`, the SFT adapter in
`sft/adapter`, DPO's checkpoints at the top), so a resumed run goes on from the stage it stopped in. With a
time budget, sampling may use the first `SAMPLING_SHARE` of it and SFT runs until `SFT_SHARE`; DPO has the
rest, at `DPO_LR_SCALE` times the run's learning rate. Curves: SFT's metrics are logged as `sft_*` at steps
1..S, DPO's at S+1.., the live judge at both.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from generation import copy
from rewards import audience
from store import runs as run_store
from tuning import reward, targets, trainers
from tuning.configs import BestOfNSettings

SAMPLING_SHARE = 0.3  # of the time budget: the most sampling may take (the rest trains)
SFT_SHARE = 0.75  # SFT stops at this share of the budget (or at `sft_steps`), DPO takes what is left
DPO_LR_SCALE = 0.1  # DPO refines the distilled policy at a tenth of SFT's learning rate: at the same rate it
# drove its margins up within a few dozen steps and the copy into loops ("a day in the life of a drama, ...")
SAMPLES_FILE = "best_of_n.json"
STAGE_FILE = "stage.json"  # in the SFT adapter's folder: the steps SFT took, where DPO's curves continue


def train(cfg: BestOfNSettings, output_dir: Path, run_id: str | None = None, resume: bool = False,
          attempt: int = 1) -> dict:
    """Run (or continue) the three stages; the result is DPO's adapter, which holds SFT's update too."""
    path, tokenizer = trainers.prepare(cfg)
    budget = trainers.Budget(output_dir)  # what earlier attempts spent counts against the time budget

    def until(share: float) -> float | None:
        return budget.deadline(share * cfg.time_budget_minutes)

    data = samples(cfg, path, tokenizer, output_dir, until(SAMPLING_SHARE))
    if trainers.is_main_process():
        budget.record()
    if not data["best"] or not data["pairs"]:
        raise ValueError(f"No usable samples: of {len(data['groups'])} prompts none had an answer the Studio accepts "
                         "and a pair that differs in reward; raise num_generations or the number of users")
    sft_steps = supervised(cfg, path, tokenizer, data["best"], output_dir / "sft", run_id, attempt,
                           trainers.StopSignals(run_id, until(SFT_SHARE), budget))
    cancelled = bool(run_id) and trainers.is_main_process() and run_store.cancel_requested(run_id)
    if trainers.any_process(cancelled):  # a run cancelled during SFT ends with SFT's adapter; resume goes on to DPO
        return {"adapter_path": str(output_dir / "sft" / "adapter"), "global_step": sft_steps, "resumed_from": None,
                "model": path}
    trainer = _dpo(cfg, path, tokenizer, data["pairs"], output_dir, run_id, attempt, sft_steps,
                   trainers.StopSignals(run_id, until(1.0), budget))
    checkpoint = trainers.last_checkpoint(output_dir) if resume else None
    result = trainers.fit(trainer, cfg, output_dir / "adapter", checkpoint, sft_steps)
    if trainers.is_main_process():
        copy.mark_short_prompt(result["adapter_path"])
    return result


def samples(cfg: BestOfNSettings, path: str, tokenizer, output_dir: Path, until: float | None) -> dict:
    """The scored samples of stage 1, drawn once per run and kept in the run folder (a resumed run reuses them):
    {groups, best: SFT rows {prompt, completion}, pairs: DPO rows {prompt, chosen, rejected}}; the rows' prompts
    are the short ones the later stages train on."""
    file = output_dir / SAMPLES_FILE
    if file.exists():
        return json.loads(file.read_text(encoding="utf-8"))
    rows, _, groups = trainers.sample_groups(cfg, None, path, tokenizer, until)
    texts = targets.texts(cfg.target, tokenizer, rows, examples=False)
    users, items = [r["user_id"] for r in rows], [r["item_id"] for r in rows]
    scores = audience.group_scores(groups, users, items, trainers.train_reward(cfg))
    shown = reward.catalog(cfg.dataset)
    best = []
    for text, group, block, item in zip(texts, groups, scores, items, strict=True):
        accepted = sorted((k for k, raw in enumerate(group) if shown.accepted(raw, item)), key=lambda k: -block[k])
        best += [{"prompt": text, "completion": group[k]} for k in accepted[:cfg.sft_per_prompt]]
    data = {"groups": groups, "scores": [np.asarray(b).tolist() for b in scores], "best": best,
            "pairs": audience.pairs_from_scores(texts, groups, scores)}
    output_dir.mkdir(parents=True, exist_ok=True)
    partial = file.with_suffix(".partial")
    partial.write_text(json.dumps(data), encoding="utf-8")
    os.replace(partial, file)  # a run killed while writing leaves no half file to resume from
    return data


def supervised(cfg: BestOfNSettings, path: str, tokenizer, best: list[dict], folder: Path, run_id: str | None,
               attempt: int, stop: trainers.StopSignals) -> int:
    """Stage 2, SFT on the best accepted samples of each prompt (continuing its own checkpoint); the steps it
    took. `stop` ends it on cancel or at its share of the time budget."""
    adapter = folder / "adapter"
    if (adapter / STAGE_FILE).exists():
        return int(json.loads((adapter / STAGE_FILE).read_text(encoding="utf-8"))["global_step"])
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(**trainers.base_args(cfg, folder, cfg.sft_steps), per_device_train_batch_size=cfg.prompts_per_step,
                     max_length=512, completion_only_loss=True)
    callbacks = [stop, *trainers.callbacks_for(cfg, run_id, attempt, prefix="sft_", examples=False)]
    trainer = SFTTrainer(model=trainers.load_policy(path), args=args, train_dataset=Dataset.from_list(best),
                         processing_class=tokenizer, peft_config=trainers.lora(cfg, path), callbacks=callbacks)
    result = trainers.fit(trainer, cfg, adapter, trainers.last_checkpoint(folder))
    if trainers.is_main_process():
        copy.mark_short_prompt(adapter)
        (adapter / STAGE_FILE).write_text(json.dumps({"global_step": result["global_step"]}), encoding="utf-8")
    return result["global_step"]


def _dpo(cfg: BestOfNSettings, path: str, tokenizer, pairs: list[dict], output_dir: Path, run_id: str | None,
         attempt: int, sft_steps: int, stop: trainers.StopSignals):
    """Stage 3's trainer: DPO on the SFT adapter (trainable), against a frozen copy of it (TRL's reference)."""
    from datasets import Dataset
    from peft import PeftModel
    from trl import DPOConfig, DPOTrainer

    policy = PeftModel.from_pretrained(trainers.load_policy(path), str(output_dir / "sft" / "adapter"),
                                       is_trainable=True)
    args = DPOConfig(**(trainers.common_args(cfg, output_dir) | {"learning_rate": cfg.learning_rate * DPO_LR_SCALE}),
                     per_device_train_batch_size=cfg.prompts_per_step, max_length=512)
    callbacks = [stop, *trainers.callbacks_for(cfg, run_id, attempt, offset=sft_steps, examples=False)]
    return DPOTrainer(model=policy, args=args, train_dataset=Dataset.from_list(pairs), processing_class=tokenizer,
                      callbacks=callbacks)
