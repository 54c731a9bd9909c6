"""Diffusion-DPO (tuning/diffusion_dpo.py) on the tiny random Stable Diffusion pipeline, on the CPU.

The tiny model paints noise, so these tests assert behaviour, never looks: pairs come from banners really
rendered, composed and ranked by the train audience; the DPO objective moves the right way on a fixed pair;
a run logs every step, stops on cancel with a checkpoint and resumes to exactly where an uninterrupted run
gets; the saved adapter is what the Studio's renderer loads through ADLOOP_IMAGE_ADAPTER.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from generation import compose, models
from generation.brief import Brief, brief_from, display_title
from generation.render import DiffusersRenderer, ModelUnavailable, cover
from rewards.audience import Impression, audience
from store import runs as run_store
from tuning import diffusion_dpo, prompts
from tuning.configs import DiffusionDPOSettings, config_for

pytestmark = pytest.mark.usefixtures("one_torch_thread")
RENDER = {"steps": 2}  # sampling steps for the pairs: the tiny model's art is noise at any count
LOGGED = {"loss", "implicit_accuracy", "rewards/margins", "mse_w", "mse_l", "ref_mse_w", "ref_mse_l"}


def config(dataset: str, model: Path, **changes) -> DiffusionDPOSettings:
    """A small run: two training users, three banners each, a learning rate the tiny UNet responds to in steps."""
    values = {"method": "diffusion_dpo", "dataset": dataset, "model": str(model), "users": 2, "num_generations": 3,
              "learning_rate": 1e-2, "lora_r": 4, "lora_alpha": 4, "lora_dropout": 0.0, "prompts_per_step": 1,
              "max_steps": 3, "save_steps": 10, "torch_threads": 1}
    return config_for(values | changes)


@pytest.fixture(scope="module")
def pairs(demo_store: str, tiny_diffusion_dir: Path) -> list[diffusion_dpo.ImagePair]:
    """Pairs rendered once for the module (set up before the per-test thread fixture, so it sets its own)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = config(demo_store, tiny_diffusion_dir)
        return diffusion_dpo.build_pairs(cfg, diffusion_dpo.load_base(cfg.model, "cpu"), **RENDER)
    finally:
        torch.set_num_threads(threads)


def item_of(dataset: str, item_id: str) -> dict:
    import services

    return services.common.catalog(dataset).loc[item_id].to_dict()


def studio_brief(dataset: str, pair: diffusion_dpo.ImagePair) -> Brief:
    """The Studio's brief for the pair's user and item (seed 0, the run's seed)."""
    return brief_from(prompts.profile_for(dataset, pair.user_id), item_of(dataset, pair.item_id), 0)


def banner_click(dataset: str, pair: diffusion_dpo.ImagePair, banner: dict) -> float:
    """The train audience's click probability of the creative a pair's banner made (the copy is the item's title)."""
    kit = compose.load_brand_kit()
    title = display_title(item_of(dataset, pair.item_id)["title"])
    creative = {"title": title, "body": "", "cta": kit.default_cta, "banner": banner}
    return float(audience("train", dataset).probabilities([Impression(pair.user_id, pair.item_id, creative)])[0])


def test_pairs_are_rendered_banners_ranked_by_the_train_audience(demo_store: str, pairs) -> None:
    assert pairs, "two users with three banners each gave no pair"
    for pair in pairs:
        assert prompts.split_of(pair.user_id) == "train"
        assert pair.prompt == studio_brief(demo_store, pair).prompt  # both images answer the Studio's own brief
        assert pair.chosen.size == pair.rejected.size == (64, 64)  # the tiny model's native size
        assert pair.chosen_seed != pair.rejected_seed
        assert np.asarray(pair.chosen).tobytes() != np.asarray(pair.rejected).tobytes()
        for art, banner in ((pair.chosen, pair.chosen_banner), (pair.rejected, pair.rejected_banner)):
            mean = np.asarray(cover(art, 300, 250)).reshape(-1, 3).mean(axis=0)
            assert banner["palette"] == [int(round(v)) for v in mean]  # features of the banner made from this art
        chosen, rejected = (banner_click(demo_store, pair, b) for b in (pair.chosen_banner, pair.rejected_banner))
        assert chosen > rejected
        assert (chosen, rejected) == pytest.approx((pair.chosen_click, pair.rejected_click))


def test_training_on_a_fixed_pair_moves_the_dpo_objective(demo_store: str, tiny_diffusion_dir: Path, pairs) -> None:
    cfg = config(demo_store, tiny_diffusion_dir)
    trainer = diffusion_dpo.DiffusionDPOTrainer(cfg, diffusion_dpo.load_base(cfg.model, "cpu"), pairs[:1])

    def objective() -> tuple[float, float]:
        """Mean loss and margin over the noise and timesteps of the three training steps."""
        with torch.no_grad():
            logs = [diffusion_dpo.dpo_loss(trainer.unet, trainer.scheduler, trainer.data, cfg.beta,
                                           diffusion_dpo.step_generator(cfg.seed, step))[1] for step in (1, 2, 3)]
        return float(np.mean([m["loss"] for m in logs])), float(np.mean([m["rewards/margins"] for m in logs]))

    before = objective()
    assert before == pytest.approx((math.log(2), 0.0), abs=1e-6)  # a fresh LoRA is the reference model
    for _ in range(3):
        trainer.train_step()
    after = objective()
    assert after[0] < before[0] and after[1] > 0


def test_run_logs_steps_stops_on_cancel_and_resumes_where_it_stopped(demo_store: str, tiny_diffusion_dir: Path,
                                                                      pairs, tmp_path: Path) -> None:
    cfg = config(demo_store, tiny_diffusion_dir)
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    for folder in (straight, stopped):
        diffusion_dpo.save_pairs(pairs[:1], folder / diffusion_dpo.PAIRS_FOLDER)  # a fixed pair, not re-rendered
        run_store.create_run(folder.name, cfg.method, cfg.dataset, cfg.to_dict(), str(folder), "", cfg.max_steps)

    whole = diffusion_dpo.train(cfg, straight, run_id="straight")
    assert whole["global_step"] == 3 and whole["resumed_from"] is None and whole["model"] == cfg.model
    logged = run_store.metrics("straight")
    assert [m["step"] for m in logged] == [1, 2, 3] and all(set(m) >= LOGGED for m in logged)

    run_store.request_cancel("stopped")
    first = diffusion_dpo.train(cfg, stopped, run_id="stopped")
    assert first["global_step"] == 1 and (stopped / "checkpoint-1").is_dir()  # stopped after a step, saved it
    run_store.update_run("stopped", cancel_requested=False)
    second = diffusion_dpo.train(cfg, stopped, run_id="stopped", resume=True, attempt=2)
    assert second["resumed_from"] == str(stopped / "checkpoint-1") and second["global_step"] == 3
    assert [(m["step"], m["attempt"]) for m in run_store.metrics("stopped")] == [(1, 1), (2, 2), (3, 2)]

    resumed, uninterrupted = (load_file(str(Path(r["adapter_path"]) / "pytorch_lora_weights.safetensors"))
                              for r in (second, whole))
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.allclose(resumed[k], uninterrupted[k], atol=1e-6) for k in resumed)  # same optimizer path


def test_the_adapter_is_promoted_through_the_image_adapter_setting(demo_store: str, tiny_diffusion_dir: Path,
                                                                   pairs, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config(demo_store, tiny_diffusion_dir, max_steps=2)
    diffusion_dpo.save_pairs(pairs[:1], tmp_path / diffusion_dpo.PAIRS_FOLDER)
    adapter = diffusion_dpo.train(cfg, tmp_path)["adapter_path"]
    base = DiffusersRenderer(cfg.model, device="cpu", steps=2)
    monkeypatch.setenv("ADLOOP_IMAGE_ADAPTER", adapter)
    tuned = DiffusersRenderer(cfg.model, device="cpu", steps=2)
    assert (base.adapter, tuned.adapter) == (None, adapter) and tuned.model is not base.model
    assert f"image: {cfg.model} on cpu + adapter {adapter}" in models.loaded()
    brief = studio_brief(demo_store, pairs[0])
    art = [renderer.render(brief, 64, 64, seed=7) for renderer in (base, tuned)]
    assert np.asarray(art[0]).tobytes() != np.asarray(art[1]).tobytes()

    monkeypatch.setenv("ADLOOP_IMAGE_ADAPTER", str(tmp_path / diffusion_dpo.PAIRS_FOLDER))
    with pytest.raises(ModelUnavailable, match="No diffusers LoRA adapter"):
        DiffusersRenderer(cfg.model, device="cpu")


def test_a_procedural_image_model_is_refused_with_a_pointer_to_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADLOOP_IMAGE_MODEL", "procedural")
    with pytest.raises(ValueError, match="ADLOOP_IMAGE_MODEL"):
        diffusion_dpo.image_model_id("")
    assert diffusion_dpo.image_model_id("some/model") == "some/model"
