"""Diffusion-DPO: a LoRA on the banner art model's UNet, tuned toward backgrounds the train audience clicks.

The text trainers tune the copy; this one tunes the pictures. For each training (user, item) prompt it
draws the Studio's brief, renders `num_generations` backgrounds from the base model (different seeds,
native size), composes each into a 300x250 banner with the item's title and the brand's default call to
action, and asks the TRAIN audience for the click probability of each creative. The copy is the same
for every candidate, so only what the art changes (mean colour, text contrast) separates them: the best
and worst backgrounds form a preference pair, ties are dropped.

Training follows Diffusion-DPO (Wallace et al., 2023): both images of a pair are noised with the same
noise at the same timestep, and the loss rewards the LoRA for lowering its denoising error on the
preferred image more than the base model (the LoRA switched off) does, relative to the other image:

    loss = -log sigmoid(-beta/2 * ((mse_w - mse_l) - (ref_mse_w - ref_mse_l)))

The errors are means over latent elements, so a pair's difference is tiny (about 1e-4) and beta is in the
thousands (`DiffusionDPOSettings.BETA` 5000, the scale used with this form for Stable Diffusion 1.5); beta
plays the role of the KL coefficient: larger keeps the adapter closer to the base model.

The run behaves like the text runs: metrics every step in the store, cancel honoured between steps, a
time budget, checkpoints (`checkpoint-N/`: the LoRA in diffusers' format plus optimizer state and step)
that a resume continues from, and a final `adapter/` that `pipeline.load_lora_weights(folder)` reads and
that the Studio uses when promoted (`image_adapter` setting, ADLOOP_IMAGE_ADAPTER). Stable Diffusion 1.x/2.x
style pipelines (a UNet conditioned on one text encoder) are supported.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import settings
from generation import brief as briefs
from generation import compose, designs, models, render
from rewards import audience
from store import repository
from store import runs as run_store
from tuning import prompts

if TYPE_CHECKING:
    from tuning.configs import DiffusionDPOSettings
    from tuning.trainers import Budget

# attention projections of every UNet transformer block (a run's `target_modules` name the text model's)
UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
BANNER_SIZE = (300, 250)  # the size the Studio scores (its `banner_features` come from the 300x250 banner)
RENDER_STEPS, RENDER_GUIDANCE = 30, 7.0  # the Studio's DiffusersRenderer defaults: pairs are the art it draws
PAIRS_FOLDER, STATE_FILE, TRAINER_STATE = "pairs", "training_state.pt", "trainer_state.json"


@dataclass(frozen=True)
class ImagePair:
    """One preference: two backgrounds for the same brief, the chosen one clicked more by the train audience."""

    user_id: str
    item_id: str
    prompt: str
    chosen: Image.Image
    rejected: Image.Image
    chosen_seed: int
    rejected_seed: int
    chosen_click: float
    rejected_click: float
    chosen_banner: dict  # the banner features the audience read, so anyone can score the pair again
    rejected_banner: dict


def image_model_id(model: str) -> str:
    """The diffusers model to tune: `model`, else the configured image model (which must not be procedural)."""
    model = model or settings.load().image_model
    if not model or model == render.PROCEDURAL:
        raise ValueError("Diffusion-DPO needs a diffusers model id or folder: set ADLOOP_IMAGE_MODEL (or the "
                         "Settings page's banner renderer, or the run's model) to one; the procedural renderer "
                         "has nothing to train")
    return model


def load_base(model_id: str, device: str) -> render.DiffusionModel:
    """A private copy of the pipeline (not the Studio's shared one, since training adds a LoRA to its UNet)."""
    model = render.load_diffusion_model(model_id, device)
    pipeline = model.pipeline
    if getattr(pipeline, "unet", None) is None or getattr(pipeline, "text_encoder_2", None) is not None:
        raise ValueError(f"Diffusion-DPO trains Stable Diffusion 1.x/2.x style pipelines (a UNet and one text "
                         f"encoder); '{model_id}' is a {type(pipeline).__name__}")
    return model


# --- preference pairs -------------------------------------------------------------------------------------------

def _candidates(renderer: render.DiffusersRenderer, brief: briefs.Brief, title: str, kit: compose.BrandKit,
                seeds: Sequence[int]) -> list[dict]:
    """Per seed: the native-size art (what the UNet generates) and the creative of the banner composed from it."""
    side, size = renderer.model.native, f"{BANNER_SIZE[0]}x{BANNER_SIZE[1]}"
    out = []
    for seed in seeds:
        art = renderer.render(brief, side, side, seed)  # cached: the banner below reuses this very image
        banner = designs.banners_for_brief(renderer, brief, title, kit.default_cta, kit, seed, (BANNER_SIZE,))[size]
        out.append({"seed": seed, "art": art,
                    "creative": {"title": title, "body": "", "cta": kit.default_cta, "banner": banner.features()}})
    return out


def banner_reward(dataset: str, seed: int = 0) -> Callable[..., list[float]]:
    """A reward in `audience.preference_pairs`' form over candidates: the train audience's click probability."""
    target = audience.audience("train", dataset, seed)

    def reward(candidates: list[dict], user_id: Sequence, item_id: Sequence) -> list[float]:
        shown = [audience.Impression(str(u), str(i), c["creative"]) for c, u, i in zip(candidates, user_id, item_id,
                                                                                         strict=True)]
        return target.probabilities(shown).tolist()

    return reward


def build_pairs(cfg: DiffusionDPOSettings, model: render.DiffusionModel, steps: int = RENDER_STEPS,
                guidance: float = RENDER_GUIDANCE, stop: Callable[[], bool] = lambda: False) -> list[ImagePair]:
    """Render, compose and score `num_generations` banners per training prompt; keep best vs worst per prompt.

    `stop` is polled between prompts (cancel, half the time budget): pairs rendered so far are kept.
    """
    renderer = render.DiffusersRenderer(model.model_id, steps=steps, guidance=guidance, model=model)
    kit, catalog = compose.configured_brand_kit(), repository.catalog(cfg.dataset)
    seeds = [cfg.seed * 1000 + k for k in range(cfg.num_generations)]
    groups, rows = [], []
    for row in prompts.prompt_rows(cfg.dataset, "train", cfg.users, cfg.items_per_user):
        if stop():
            break
        item = catalog.loc[row["item_id"]].to_dict()
        brief = briefs.brief_from(prompts.profile_for(cfg.dataset, row["user_id"]), item, cfg.seed)
        try:
            groups.append(_candidates(renderer, brief, briefs.display_title(item["title"]), kit, seeds))
        except render.UnsafeArt:  # art the Studio would never show is no training example either
            continue
        rows.append(row | {"prompt": brief.prompt})
    reward = banner_reward(cfg.dataset, cfg.seed)
    # the rows themselves stand for the prompts: two users can share a brief's prompt text
    ranked = audience.preference_pairs(rows, groups, [r["user_id"] for r in rows], [r["item_id"] for r in rows],
                                       reward)
    return [_pair(p["prompt"], p["chosen"], p["rejected"], reward) for p in ranked]


def _pair(row: dict, chosen: dict, rejected: dict, reward: Callable[..., list[float]]) -> ImagePair:
    clicks = reward([chosen, rejected], user_id=[row["user_id"]] * 2, item_id=[row["item_id"]] * 2)
    return ImagePair(str(row["user_id"]), str(row["item_id"]), row["prompt"], chosen["art"], rejected["art"],
                     chosen["seed"], rejected["seed"], float(clicks[0]), float(clicks[1]),
                     chosen["creative"]["banner"], rejected["creative"]["banner"])


def save_pairs(pairs: Sequence[ImagePair], folder: Path) -> None:
    """Pairs as PNGs plus `pairs.json`, so a resumed run trains on exactly the same data without re-rendering."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for n, pair in enumerate(pairs):
        meta = {f.name: getattr(pair, f.name) for f in fields(pair) if f.name not in ("chosen", "rejected")}
        for side in ("chosen", "rejected"):
            getattr(pair, side).save(folder / f"{n:04d}-{side}.png")
        rows.append(meta)
    (folder / "pairs.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")


def load_pairs(folder: Path) -> list[ImagePair] | None:
    """The pairs saved by `save_pairs`, or None when there are none yet."""
    index = folder / "pairs.json"
    if not index.is_file():
        return None
    rows = json.loads(index.read_text(encoding="utf-8"))
    return [ImagePair(**meta, chosen=Image.open(folder / f"{n:04d}-chosen.png").convert("RGB"),
                      rejected=Image.open(folder / f"{n:04d}-rejected.png").convert("RGB"))
            for n, meta in enumerate(rows)]


# --- the loss ---------------------------------------------------------------------------------------------------

@dataclass
class PairTensors:
    """A pair set encoded once: VAE latents of both images (scaled) and the prompt's text embeddings."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    embeds: torch.Tensor

    def take(self, index: list[int]) -> PairTensors:
        return PairTensors(self.chosen[index], self.rejected[index], self.embeds[index])


@torch.no_grad()
def encode_pairs(pipeline, pairs: Sequence[ImagePair], chunk: int = 8) -> PairTensors:
    """Latents (the VAE mode times its scaling factor, as the UNet was trained on) and prompt embeddings.

    Encoded once, in chunks (a VAE encoder's activations at 512 px are large), since both models are frozen."""
    vae, device = pipeline.vae, pipeline.unet.device

    def latents(images: list[Image.Image]) -> torch.Tensor:
        out = []
        for start in range(0, len(images), chunk):
            pixels = torch.stack([torch.from_numpy(np.asarray(i, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)
                                  for i in images[start:start + chunk]]).to(device, vae.dtype)
            out.append(vae.encode(pixels).latent_dist.mode() * vae.config.scaling_factor)
        return torch.cat(out)

    embeds = torch.cat([pipeline.encode_prompt(p.prompt, device, 1, False)[0] for p in pairs])
    return PairTensors(latents([p.chosen for p in pairs]), latents([p.rejected for p in pairs]), embeds)


def step_generator(seed: int, step: int) -> torch.Generator:
    """Noise and timesteps of a step depend on (seed, step) alone, so a resumed run draws what the original would."""
    return torch.Generator("cpu").manual_seed(seed * 1_000_003 + step)


def _errors(unet, noisy: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor,
            target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample mean squared denoising error, split into (chosen, rejected) halves."""
    prediction = unet(noisy, t, encoder_hidden_states=embeds).sample
    return (prediction.float() - target.float()).pow(2).mean(dim=(1, 2, 3)).chunk(2)


def dpo_loss(unet, scheduler, batch: PairTensors, beta: float,
             generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
    """The Diffusion-DPO loss of a batch and what to log: implicit accuracy is the share of pairs where the LoRA
    favours the chosen image more than the reference does; `rewards/margins` the mean logit (beta-scaled)."""
    n, device = batch.chosen.shape[0], batch.chosen.device
    noise = torch.randn(batch.chosen.shape, generator=generator).to(device, batch.chosen.dtype).repeat(2, 1, 1, 1)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (n,), generator=generator).to(device).repeat(2)
    latents = torch.cat([batch.chosen, batch.rejected])
    noisy, embeds = scheduler.add_noise(latents, noise, t), batch.embeds.repeat(2, 1, 1)
    target = noise if scheduler.config.prediction_type == "epsilon" else scheduler.get_velocity(latents, noise, t)
    unet.disable_adapters()
    try:
        with torch.no_grad():
            ref_w, ref_l = _errors(unet, noisy, t, embeds, target)
    finally:
        unet.enable_adapters()
    mse_w, mse_l = _errors(unet, noisy, t, embeds, target)
    logits = -0.5 * beta * ((mse_w - mse_l) - (ref_w - ref_l))
    loss = -F.logsigmoid(logits).mean()
    return loss, {"loss": loss.item(), "implicit_accuracy": (logits > 0).float().mean().item(),
                  "rewards/margins": logits.mean().item(), "mse_w": mse_w.mean().item(),
                  "mse_l": mse_l.mean().item(), "ref_mse_w": ref_w.mean().item(), "ref_mse_l": ref_l.mean().item()}


def batch_indices(step: int, batch: int, count: int, seed: int) -> list[int]:
    """The pairs of a (1-based) step: consecutive slices of a seeded shuffle per epoch, so resuming repeats it."""
    out = []
    for position in range((step - 1) * batch, step * batch):
        epoch, offset = divmod(position, count)
        out.append(int(torch.randperm(count, generator=torch.Generator().manual_seed(seed + epoch))[offset]))
    return out


# --- the trainer ------------------------------------------------------------------------------------------------

class DiffusionDPOTrainer:
    """A LoRA on a pipeline's UNet, its optimizer and the encoded pairs; steps, checkpoints and the final adapter.

    On CUDA the frozen weights stay in the pipeline's fp16 while the LoRA parameters are fp32 (a gradient
    scaler keeps small fp16 gradients from vanishing); elsewhere everything is fp32.
    """

    def __init__(self, cfg: DiffusionDPOSettings, model: render.DiffusionModel, pairs: Sequence[ImagePair]) -> None:
        from diffusers import DDPMScheduler
        from peft import LoraConfig

        self.cfg, self.model, self.step = cfg, model, 0
        pipeline = model.pipeline
        self.unet, self.scheduler = pipeline.unet, DDPMScheduler.from_config(pipeline.scheduler.config)
        for part in (pipeline.unet, pipeline.vae, pipeline.text_encoder):
            part.requires_grad_(False)
        self.data = encode_pairs(pipeline, pairs)
        self.unet.add_adapter(LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                         init_lora_weights="gaussian", target_modules=list(UNET_TARGETS)))
        self.params = [p for p in self.unet.parameters() if p.requires_grad]
        for p in self.params:
            p.data = p.data.float()
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.learning_rate)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.data.chosen.dtype == torch.float16)
        self.unet.train()

    def train_step(self) -> dict[str, float]:
        """One optimizer step on the next batch of pairs; returns the metrics measured before the update."""
        self.step += 1
        index = batch_indices(self.step, self.cfg.prompts_per_step, len(self.data.chosen), self.cfg.seed)
        loss, metrics = dpo_loss(self.unet, self.scheduler, self.data.take(index), self.cfg.beta,
                                 step_generator(self.cfg.seed, self.step))
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        norm = float(torch.nn.utils.clip_grad_norm_(self.params, 1.0))
        self.scaler.step(self.optimizer)  # on fp16, a step whose gradients overflowed is skipped and the scale cut
        self.scaler.update()
        if math.isfinite(norm):  # an overflowed fp16 step has no norm worth logging
            metrics["grad_norm"] = norm
        return metrics | {"learning_rate": self.cfg.learning_rate}

    def save_adapter(self, folder: Path) -> None:
        """The LoRA in diffusers' format, with its rank and alpha, readable by `pipeline.load_lora_weights`."""
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft.utils import get_peft_model_state_dict

        layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(self.unet))
        type(self.model.pipeline).save_lora_weights(str(folder), unet_lora_layers=layers,
                                                    unet_lora_adapter_metadata=self.unet.peft_config["default"]
                                                    .to_dict())

    def save_checkpoint(self, output_dir: Path) -> Path:
        """`checkpoint-N/`: the adapter, optimizer and scaler state, and last `trainer_state.json` (the step), the
        file `trainers.last_checkpoint` takes as the mark of a whole checkpoint, as for the text trainers."""
        folder = output_dir / f"checkpoint-{self.step}"
        self.save_adapter(folder)
        torch.save({"optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict()}, folder / STATE_FILE)
        (folder / TRAINER_STATE).write_text(json.dumps({"global_step": self.step, "method": "diffusion_dpo"}),
                                            encoding="utf-8")
        return folder

    def restore(self, checkpoint: Path) -> None:
        """Continue from a checkpoint: its LoRA weights, optimizer state and step."""
        from diffusers.loaders.lora_base import LORA_WEIGHT_NAME_SAFE
        from diffusers.utils import convert_unet_state_dict_to_peft
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        saved = load_file(str(checkpoint / LORA_WEIGHT_NAME_SAFE))
        weights = convert_unet_state_dict_to_peft({k.removeprefix("unet."): v for k, v in saved.items()})
        result = set_peft_model_state_dict(self.unet, weights, adapter_name="default")
        if getattr(result, "unexpected_keys", None):
            raise ValueError(f"Checkpoint {checkpoint} does not fit this model: {result.unexpected_keys[:3]}")
        state = torch.load(checkpoint / STATE_FILE, map_location="cpu", weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = int(json.loads((checkpoint / TRAINER_STATE).read_text(encoding="utf-8"))["global_step"])


# --- a run ------------------------------------------------------------------------------------------------------

def _pairs_for_run(cfg: DiffusionDPOSettings, model: render.DiffusionModel, output_dir: Path, stop: Callable[[], bool],
                   render_options: dict) -> list[ImagePair]:
    """The run's pairs: the saved ones (a resumed or restarted run), else rendered now and saved."""
    folder = output_dir / PAIRS_FOLDER
    pairs = load_pairs(folder)
    if pairs is None:
        pairs = build_pairs(cfg, model, stop=stop, **render_options)
        if not pairs:
            raise ValueError("No preference pairs: every prompt's banners scored the same (or none were rendered)")
        save_pairs(pairs, folder)
    return pairs


def _stopper(run_id: str | None, deadline: float | None, budget: Budget, share: float = 1.0) -> Callable[[], bool]:
    """True once the run's cancel flag is up or `share` of the time budget left (from now) is spent; each call
    records the time the run has spent, so a resume gets only what is left."""
    until = time.monotonic() + share * (deadline - time.monotonic()) if deadline else None

    def stop() -> bool:
        budget.record()
        return bool((run_id and run_store.cancel_requested(run_id)) or (until and time.monotonic() >= until))
    return stop


def train(cfg: DiffusionDPOSettings, output_dir: Path, run_id: str | None = None, resume: bool = False,
          attempt: int = 1, render_options: dict | None = None) -> dict:
    """Build (or reload) the pairs, train the LoRA, save `output_dir/adapter`; the text trainers' result keys.

    `render_options` (steps, guidance) override the Studio's sampling for the pairs: tests use a few steps.
    """
    from tuning.trainers import Budget, last_checkpoint  # late: trainers dispatches here

    if cfg.torch_threads > 0:
        torch.set_num_threads(cfg.torch_threads)
    torch.manual_seed(cfg.seed)
    output_dir, model_id = Path(output_dir), image_model_id(cfg.model)
    budget = Budget(output_dir)  # what earlier attempts spent counts against the time budget
    deadline = budget.deadline(cfg.time_budget_minutes)
    model = load_base(model_id, models.resolve_device(settings.load().device))
    pairs = _pairs_for_run(cfg, model, output_dir, _stopper(run_id, deadline, budget, 0.5), render_options or {})
    trainer = DiffusionDPOTrainer(cfg, model, pairs)
    checkpoint = last_checkpoint(output_dir) if resume else None
    if checkpoint:
        trainer.restore(Path(checkpoint))
    _loop(trainer, output_dir, run_id, attempt, _stopper(run_id, deadline, budget))
    adapter = output_dir / "adapter"
    trainer.save_adapter(adapter)
    return {"adapter_path": str(adapter), "global_step": trainer.step, "resumed_from": checkpoint, "model": model_id}


def _loop(trainer: DiffusionDPOTrainer, output_dir: Path, run_id: str | None, attempt: int,
          stop: Callable[[], bool]) -> None:
    """Step until max_steps, logging every step; a checkpoint every save_steps and when stopped early."""
    cfg, first, started = trainer.cfg, trainer.step, time.perf_counter()
    while trainer.step < cfg.max_steps:
        metrics = trainer.train_step()
        metrics["step_seconds"] = (time.perf_counter() - started) / (trainer.step - first)
        if run_id:
            run_store.add_metrics(run_id, trainer.step, metrics, attempt)
        if not math.isfinite(metrics["loss"]):
            raise FloatingPointError(f"Diffusion-DPO diverged at step {trainer.step}: {metrics}")
        stopping = trainer.step < cfg.max_steps and stop()
        if trainer.step % cfg.save_steps == 0 or stopping:
            trainer.save_checkpoint(output_dir)
        if stopping:
            return
