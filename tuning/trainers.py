"""TRL trainers for the ad writer: GRPO and RLOO on the train audience's click probability, DPO on pairs it ranks.

All three train a LoRA adapter (q/k/v/o projections) rather than the whole model: the adapter is a few MB,
trains on a laptop CPU and is loaded on top of the base model by the Studio and the evaluation. The KL
coefficient `beta` is not zero by default for GRPO and RLOO: the first pilot (FACTS.md) showed a naive
reward hacked within minutes, and the KL term keeps the policy near the base model's fluent copy.

The reward (`tuning.reward`) is the train audience's click probability of the parsed completion, reduced
for copy the Studio would reject. A run can be given a time budget as well as a step count: the
benchmark's question is what 15 minutes of a laptop CPU buys.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

import settings
from generation import models
from rewards import audience
from store import runs as run_store
from tuning import logged, targets
from tuning.configs import BEST_OF_N_SFT_DPO, DPOSettings, TextConfig, TuningConfig
from tuning.sampling import TEMPERATURE, engine_for, sample, sample_on


def resolve_model(model: str) -> str:
    """A loadable folder or id: the embedded default is converted to a local folder once."""
    cfg = settings.load()
    model = model or cfg.text_model
    if model == settings.EMBEDDED_TEXT_MODEL:
        return str(models.embedded_text_model_folder(Path(cfg.model_cache)))
    return model


def load_tokenizer(path: str):
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def is_main_process() -> bool:
    """Rank 0 of an `accelerate launch` (or the only process): the one that talks to the store."""
    return int(os.environ.get("RANK", "0")) == 0


def any_process(flag: bool) -> bool:
    """True on every process when it is true on any: under `accelerate` all ranks must stop at the same step,
    or the others wait forever in the next gradient all-reduce."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    value = torch.tensor([float(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


class StoreCallback(TrainerCallback):
    """Writes every logged step to the run's metrics (main process only). A later stage of a chained run logs
    after the earlier ones (`offset`), and a stage's own metrics can carry its name (`prefix`), so its curves
    stay apart from the next stage's."""

    def __init__(self, run_id: str, attempt: int = 1, offset: int = 0, prefix: str = "") -> None:
        self.run_id, self.attempt, self.offset, self.prefix = run_id, attempt, offset, prefix

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and state.is_world_process_zero:
            run_store.add_metrics(self.run_id, self.offset + state.global_step,
                                  {self.prefix + k: v for k, v in logs.items()}, self.attempt)


class Budget:
    """The time a run has spent over all its attempts, kept in its folder (`budget.json`), so a resumed run
    gets only what is left of its time budget, not the whole budget again."""

    FILE = "budget.json"

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / self.FILE
        try:
            self.before = float(json.loads(self.path.read_text(encoding="utf-8"))["spent_seconds"])
        except (OSError, ValueError, KeyError, TypeError):
            self.before = 0.0  # a first attempt, or a file cut off by a kill: count from here
        self.started = time.monotonic()

    def spent(self) -> float:
        return self.before + time.monotonic() - self.started

    def deadline(self, minutes: float) -> float | None:
        """The `time.monotonic()` value at which a budget of `minutes` over the whole run is spent."""
        return self.started + 60 * minutes - self.before if minutes else None

    def record(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".partial")
        partial.write_text(json.dumps({"spent_seconds": round(self.spent(), 3)}), encoding="utf-8")
        os.replace(partial, self.path)


class StopSignals(TrainerCallback):
    """Stops training, after saving a checkpoint, when the run's cancel flag is raised in the store (read by the
    main process) or its time budget (`deadline`, a `time.monotonic()` value) is spent, on every process at once."""

    def __init__(self, run_id: str | None, deadline: float | None, budget: Budget | None = None) -> None:
        self.run_id = run_id
        self.deadline = deadline
        self.budget = budget

    def on_step_end(self, args, state, control, **kwargs):
        cancelled = bool(self.run_id) and is_main_process() and run_store.cancel_requested(self.run_id)
        late = self.deadline is not None and time.monotonic() >= self.deadline
        if self.budget is not None and is_main_process():
            self.budget.record()
        if any_process(cancelled or late):
            control.should_training_stop = True
            control.should_save = True
        return control


class HeldOutJudge(TrainerCallback):
    """Every `eval_steps`, the current policy writes for each of a few held-out users and the JUDGE
    audience scores them: the live curve that says whether gains on the train reward carry over, logged as
    `judge_ctr` at step 0 (the base model) and at each evaluation point."""

    def __init__(self, cfg: TextConfig, path: str, run_id: str, attempt: int, offset: int = 0,
                 examples: bool = True) -> None:
        self.cfg, self.run_id, self.attempt, self.offset = cfg, run_id, attempt, offset
        self.tokenizer = load_tokenizer(path)  # its own: sampling pads left, the trainer's may pad right
        self.rows = targets.rows(cfg.target, cfg.dataset, "held_out", cfg.eval_users)
        # the base model (step 0 of the run) on the Studio's prompt; the policy on the prompt it is tuned on
        self.base_texts = targets.texts(cfg.target, self.tokenizer, self.rows)
        self.texts = targets.texts(cfg.target, self.tokenizer, self.rows, examples)
        self.judge = targets.reward(cfg.target, cfg.dataset, "judge")
        self.rules = targets.rules(cfg.target, cfg.dataset, self.rows)

    def _log(self, model, step: int) -> None:
        training = model.training
        model.eval()
        texts = self.base_texts if self.offset + step == 0 else self.texts
        raw, _, _ = sample(model, self.tokenizer, texts, self.cfg.max_completion_length, TEMPERATURE,
                           seed=self.cfg.seed, rules=self.rules)
        model.train(training)
        ctr = self.judge(raw, user_id=[r["user_id"] for r in self.rows], item_id=[r["item_id"] for r in self.rows])
        run_store.add_metrics(self.run_id, self.offset + step, {"judge_ctr": float(sum(ctr) / len(ctr))},
                              self.attempt)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step == 0:
            self._log(model, 0)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.cfg.eval_steps == 0 or control.should_training_stop:
            self._log(model, state.global_step)


def lora(cfg: TextConfig, path: str):
    """The LoRA adapter: on every layer, or on the top `lora_layers` only. Backpropagation then stops at the
    lowest adapted layer, so a step costs much less on a CPU, and the top layers are where the wording is."""
    from peft import LoraConfig
    from transformers import AutoConfig

    layers = None
    if cfg.lora_layers:
        depth = AutoConfig.from_pretrained(path).num_hidden_layers
        layers = list(range(max(depth - cfg.lora_layers, 0), depth))
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.target_modules), layers_to_transform=layers, task_type="CAUSAL_LM")


def common_args(cfg: TextConfig, output_dir: Path, max_steps: int | None = None) -> dict:
    """Trainer arguments shared by the methods: CPU unless CUDA is present, log every step, checkpoint often
    (`beta` only for the preference and RL trainers)."""
    return {"beta": cfg.beta, **base_args(cfg, output_dir, max_steps)}


def base_args(cfg: TextConfig, output_dir: Path, max_steps: int | None = None) -> dict:
    """What every transformers `TrainingArguments` of a run shares, supervised stages included."""
    cuda = torch.cuda.is_available()
    return {"output_dir": str(output_dir), "max_steps": max_steps or cfg.max_steps, "learning_rate": cfg.learning_rate,
            "logging_steps": 1, "save_strategy": "steps", "save_steps": cfg.save_steps,
            "report_to": list(cfg.report_to), "use_cpu": not cuda, "bf16": cuda and torch.cuda.is_bf16_supported(),
            "seed": cfg.seed, "data_seed": cfg.seed, "disable_tqdm": True, "gradient_accumulation_steps": 1,
            "lr_scheduler_type": "constant", "warmup_steps": 0, "gradient_checkpointing": cfg.gradient_checkpointing}


def load_policy(path: str, device: str | None = None):
    """A fresh full-precision copy of the model: LoRA training and adapter wrapping modify the model they get.
    Trainers place it themselves (one device per process under `accelerate`); others pass `device`."""
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return model.to(device) if device else model


def build_online(cfg: TextConfig, path: str, tokenizer, output_dir: Path, callbacks: list,
                 deadline: float | None = None):
    """GRPO or RLOO: sample `num_generations` completions per prompt, reward them, update the adapter."""
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    config_cls, trainer_cls = (GRPOConfig, GRPOTrainer) if cfg.method == "grpo" else (RLOOConfig, RLOOTrainer)
    args = config_cls(**common_args(cfg, output_dir), num_generations=cfg.num_generations,
                      per_device_train_batch_size=cfg.prompts_per_step * cfg.num_generations,
                      max_completion_length=cfg.max_completion_length, temperature=cfg.temperature)
    data = targets.prompt_dataset(cfg.target, cfg.dataset, tokenizer, "train", cfg.users, cfg.items_per_user)
    return trainer_cls(model=load_policy(path), reward_funcs=train_reward(cfg), args=args, train_dataset=data,
                       processing_class=tokenizer, peft_config=lora(cfg, path), callbacks=callbacks)


def train_reward(cfg: TextConfig):
    return targets.reward(cfg.target, cfg.dataset, "train", cfg.seed, studio_gate=cfg.studio_gate)


def sample_groups(cfg: TextConfig, model, path: str, tokenizer, until: float | None) -> tuple[list[dict],
                                                                                                  list[str], list]:
    """(rows, prompt texts, completion groups): `num_generations` samples per training prompt from the base
    model at `path`, with the Studio's nucleus and stop, on the Studio's engine when it runs here, else from
    `model` (that base model, loaded here when None) sharing each prompt's prefill in transformers. Sampling
    stops at `until` (a `time.monotonic()` value), keeping the prompts sampled so far."""
    sampler = load_tokenizer(path)  # its own: sampling pads left, the trainer's may pad right
    rows = targets.rows(cfg.target, cfg.dataset, "train", cfg.users, cfg.items_per_user)
    texts = targets.texts(cfg.target, tokenizer, rows)
    per_chunk = max(16 // cfg.num_generations, 1)
    groups: list = []
    temperature, rules = max(cfg.temperature, 0.1), targets.rules(cfg.target, cfg.dataset, rows)
    with engine_for(path) as fast:  # the base weights on the Studio's engine, when it runs here
        if fast is None:
            model = (model or load_policy(path)).eval()
        for start in range(0, len(rows), per_chunk):
            if until and time.monotonic() > until:
                break
            chunk, chunk_rules = texts[start:start + per_chunk], rules.part(start, start + per_chunk)
            if fast is not None:
                raw, _, _ = sample_on(fast, chunk, cfg.max_completion_length, temperature, seed=cfg.seed + start,
                                      copies=cfg.num_generations, rules=chunk_rules)
            else:
                raw, _, _ = sample(model, sampler, chunk, cfg.max_completion_length, temperature,
                                   seed=cfg.seed + start, copies=cfg.num_generations, rules=chunk_rules)
            groups += [raw[n:n + cfg.num_generations] for n in range(0, len(raw), cfg.num_generations)]
    return rows[:len(groups)], texts[:len(groups)], groups


def dpo_pairs(cfg: TextConfig, model, path: str, tokenizer, deadline: float | None = None) -> list[dict]:
    """Best vs worst of each training prompt's samples (`sample_groups`) by the training reward. Sampling
    stops early at half the time budget, leaving the rest for training."""
    now = time.monotonic()
    rows, texts, groups = sample_groups(cfg, model, path, tokenizer, deadline and now + (deadline - now) / 2)
    return audience.preference_pairs(texts, groups, [r["user_id"] for r in rows], [r["item_id"] for r in rows],
                                     train_reward(cfg))


PAIRS_FILE = "dpo_pairs.json"  # in the run's folder: the pairs its first attempt sampled, for every resume


def stored_pairs(output_dir: Path) -> list[dict]:
    """The preference pairs an earlier attempt of this run sampled, or [] (none yet, or cut off by a kill)."""
    try:
        pairs = json.loads((Path(output_dir) / PAIRS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return pairs if isinstance(pairs, list) else []


def store_pairs(output_dir: Path, pairs: list[dict]) -> list[dict]:
    """Keep the sampled pairs with the run (written whole, then renamed), so a resume trains on the same ones."""
    if pairs and is_main_process():
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        partial = Path(output_dir) / f"{PAIRS_FILE}.partial"
        partial.write_text(json.dumps(pairs), encoding="utf-8")
        os.replace(partial, Path(output_dir) / PAIRS_FILE)
    return pairs


def build_dpo(cfg: DPOSettings, path: str, tokenizer, output_dir: Path, callbacks: list,
              deadline: float | None = None):
    """DPO on the base model's own variants ranked by the training reward (reference: the adapter switched off)."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    model = load_policy(path, models.resolve_device("auto"))  # samples the pairs, then is trained on them
    if cfg.preferences == "logged":
        pairs, skipped = logged.preference_rows(cfg.dataset, tokenizer, min_impressions=cfg.min_impressions)
        if not pairs:
            raise logged.no_pairs(cfg.dataset, cfg.min_impressions, skipped)
    else:
        pairs = stored_pairs(output_dir) or store_pairs(output_dir, dpo_pairs(cfg, model, path, tokenizer, deadline))
    if not pairs:
        raise ValueError("No preference pairs: every prompt's variants scored the same")
    args = DPOConfig(**common_args(cfg, output_dir), per_device_train_batch_size=cfg.prompts_per_step,
                     max_length=512)
    return DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(pairs),
                      processing_class=tokenizer, peft_config=lora(cfg, path), callbacks=callbacks)


def prepare(cfg: TuningConfig) -> tuple[str, object]:
    """The model's folder and tokenizer, with torch's threads and seed set for the run."""
    if cfg.torch_threads > 0:
        torch.set_num_threads(cfg.torch_threads)
    torch.manual_seed(cfg.seed)
    path = resolve_model(cfg.model)
    return path, load_tokenizer(path)


def build_trainer(cfg: TextConfig, output_dir: Path, callbacks: list | None = None, run_id: str | None = None):
    """The configured TRL trainer, ready to `train()`; its time budget (if any) is what the run's earlier
    attempts left of it (`Budget`), counted from now."""
    path, tokenizer = prepare(cfg)
    budget = Budget(output_dir)
    deadline = budget.deadline(cfg.time_budget_minutes)
    callbacks = [StopSignals(run_id, deadline, budget), *(callbacks or [])]  # first: the others see its stop
    build = build_dpo if cfg.method == "dpo" else build_online
    trainer = build(cfg, path, tokenizer, Path(output_dir), callbacks, deadline)
    if is_main_process():
        budget.record()  # DPO's sampling counts even if the run is killed before its first step
    return trainer


def _complete(checkpoint: Path) -> bool:
    """The trainer writes `trainer_state.json` last: a checkpoint is whole once that file parses."""
    try:
        json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def last_checkpoint(output_dir: Path) -> str | None:
    """The newest complete `checkpoint-N` folder (adapter, optimizer, scheduler, RNG and trainer state), if any;
    one a killed worker left half-written is passed over."""
    folders = [p for p in Path(output_dir).glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    for folder in sorted(folders, key=lambda p: int(p.name.split("-")[-1]), reverse=True):
        if _complete(folder):
            return str(folder)
    return None


def callbacks_for(cfg: TextConfig, run_id: str | None, attempt: int, offset: int = 0, prefix: str = "",
                  examples: bool = True) -> list:
    """Store metrics and the live held-out judge (prompting the policy with or without the worked examples),
    for a run's main process; stop signals are added when the trainer is built (every process needs them)."""
    if not run_id or not is_main_process():
        return []
    live = [HeldOutJudge(cfg, resolve_model(cfg.model), run_id, attempt, offset, examples)] if cfg.eval_steps else []
    return [StoreCallback(run_id, attempt, offset, prefix), *live]


def train(cfg: TuningConfig, output_dir: Path, run_id: str | None = None, resume: bool = False,
          attempt: int = 1) -> dict:
    """Train (or continue from the last checkpoint) and save the final adapter to `output_dir/adapter`."""
    if cfg.method == "diffusion_dpo":
        from tuning import diffusion_dpo

        return diffusion_dpo.train(cfg, Path(output_dir), run_id=run_id, resume=resume, attempt=attempt)
    if cfg.method == BEST_OF_N_SFT_DPO:
        from tuning import distill

        return distill.train(cfg, Path(output_dir), run_id=run_id, resume=resume, attempt=attempt)
    trainer = build_trainer(cfg, output_dir, callbacks_for(cfg, run_id, attempt), run_id)
    checkpoint = last_checkpoint(output_dir) if resume else None
    return fit(trainer, cfg, Path(output_dir) / "adapter", checkpoint)


def fit(trainer, cfg: TextConfig, adapter: Path, checkpoint: str | None, steps_before: int = 0) -> dict:
    """Train (from `checkpoint`, if any), save the adapter and tokenizer; the run's result."""
    trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(str(adapter))  # writes on the main process only
    if is_main_process():
        trainer.processing_class.save_pretrained(str(adapter))
    return {"adapter_path": str(adapter), "global_step": steps_before + int(trainer.state.global_step),
            "resumed_from": checkpoint, "model": resolve_model(cfg.model)}
