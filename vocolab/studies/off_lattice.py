"""The scene model the video studies may start from: the base model after a short continuation
of its upper stage on training scenes of which half are drawn as frames of freshly sampled clips
(`data.train_clip_frames`: objects between the lattice cells, where clip frames hold them), its
vision tower trained too.

Why: every scene object is drawn on a lattice cell, clip objects move between cells, and a
scene model's perception drops on clip frames. A quarter-cell jitter from the start, or on the
vision tower alone, undoes the binding of shape and position; a tenth of a cell after the binding
keeps it but carries little (validation clip frames 0.43 -> 0.50 from the study's seed-0 scene
model in 550 steps); half the scenes drawn as clip frames carry it (0.43 -> 0.80, lattice scenes
0.93), RESULTS.md, video section. The held-out clips do not change: only the scene model the clip
cells start from does.
"""

from __future__ import annotations

from pathlib import Path

from vocolab.core.config import Config

CLIP_FRAMES = 0.5  # the share of the continuation's training scenes drawn as clip frames


def tuned_config(cfg: Config, steps: int) -> Config:
    """The continuation's config: half its training scenes clip frames, a trainable tower, `steps` upper steps."""
    return cfg.override(**{"data.train_clip_frames": CLIP_FRAMES, "train.train_vision": True,
                           "train.instruct_steps": steps})


def check_steps(steps: int) -> None:
    """Refuse a negative `--off-lattice-steps` before any data is generated or model trained (0: off)."""
    if steps < 0:
        raise ValueError(f"off-lattice tuning: steps must be >= 0 (0: the base model as it is), got {steps}")


def clip_start_model(cfg: Config, runs: Path, scenes, steps: int = 0, progress: bool = True):
    """The scene model a video study's clip models start from: the study's base model
    (`studies.common.base_model`), or with `steps` > 0 that model tuned off the lattice."""
    from vocolab.studies.common import base_model

    upper = base_model(cfg, runs, scenes, progress)
    return off_lattice_model(cfg, runs, upper, scenes.tokenizer, steps, progress) if steps else upper


def off_lattice_model(cfg: Config, runs: Path, base, tokenizer, steps: int, progress: bool = True):
    """`base` (the study's scene model) after `steps` upper steps with clip-frame scenes; trained once per
    config, seed, base weights and steps, kept under `runs/off-lattice-<steps>` (its logs beside it)."""
    from lightning import seed_everything

    from vocolab.data.module import VoCoDataModule
    from vocolab.models.checkpoint import load_if_saved_for, save_checkpoint
    from vocolab.studies.cells import key_of, model_id
    from vocolab.training.modules import VLMModule
    from vocolab.training.recipe import vlm_stage

    if steps < 1:
        raise ValueError(f"off-lattice tuning: steps must be >= 1, got {steps}")
    tuned = tuned_config(cfg, steps)
    folder = runs / f"off-lattice-{steps}"
    meta_key = key_of({"cfg": tuned.to_dict(), "base": model_id(base)})
    saved = load_if_saved_for(folder, off_lattice_key=meta_key)
    if saved is not None:
        print(f"reusing the off-lattice scene model in {folder}")
        return saved[0].eval()
    print(f"tuning the scene model off the lattice ({steps} steps, {CLIP_FRAMES:.0%} of its scenes clip frames)")
    data = VoCoDataModule(tuned, turns=tuned.train.turns, progress=progress, tokenizer=tokenizer)
    data.setup()
    init = VLMModule(tuned, mask="causal", stage="pretrain", tokenizer=tokenizer)
    init.model.load_state_dict(base.state_dict())
    seed_everything(tuned.seed, verbose=False)
    model = vlm_stage(tuned, data, runs / f"off-lattice-{steps}-logs", "upper", task="qa", mask="causal",
                      steps=steps, init=init, progress=progress).model.cpu().eval()
    save_checkpoint(model, tuned, folder, {"off_lattice_key": meta_key})
    return model
