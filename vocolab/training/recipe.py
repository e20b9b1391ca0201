"""The VoCo-LLaMA training recipe as one chain of Lightning stages.

    clip      contrastive mini CLIP on (scene, caption)
    pretrain  projector + LLM learn to caption with all image tokens (CLIP frozen,
              its features computed once)
    upper     instruct on QA under the `causal` mask: the upper bound
    voco      instruct on QA under the `voco` mask with K VoCo tokens, initialised
              from the upper-bound model (it already answers; now it must compress)
              and, per `train.voco_objective`, distilled from it: by default its text
              tokens' hidden states are pulled towards the upper bound's (`training.distill`)

The lower bound needs no training: it is the upper-bound model evaluated under
the `voco` mask. Each stage logs to CSV under `out/<stage>/` and checkpoints there.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from lightning import seed_everything

from vocolab.core.config import Config
from vocolab.data.module import VoCoDataModule
from vocolab.training.modules import ClipModule, VLMModule
from vocolab.training.trainer import make_trainer


@dataclass
class Trained:
    """What the recipe produced, with the wall time of every stage."""

    data: VoCoDataModule
    clip: ClipModule | None = None
    pretrain: VLMModule | None = None
    upper: VLMModule | None = None
    voco: VLMModule | None = None
    seconds: dict[str, float] = field(default_factory=dict)


def fit(module, data, cfg: Config, out: Path, name: str, steps: int, *, progress: bool = True,
        checkpoint: bool = True, callbacks=()) -> None:
    """Train `module` on `data` for `steps` with the one Trainer every stage uses, logging to
    `out/<name>/` (checkpoints there too, unless `checkpoint=False`: the studies' cells)."""
    if checkpoint:
        shutil.rmtree(out / name, ignore_errors=True)  # no stale checkpoints from an earlier run of this stage
    trainer = make_trainer(cfg, out, name, steps, progress=progress, checkpoint=checkpoint, limit_val_batches=0,
                           callbacks=list(callbacks))
    trainer.fit(module, datamodule=data)


def fine_tune(module, data, cfg: Config, out: Path, name: str, steps: int, *, init, task: str = "qa",
              progress: bool = True, callbacks=()):
    """A study's cell: `module` (already built, after seeding) starts from `init`'s weights
    (a trained `VoCoVLM`) and trains `steps` steps on `data` without checkpoints. Returns
    the trained model on the CPU in eval mode."""
    module.model.load_backbone(init.state_dict())
    data.set_task(task, voco_tokens=cfg.voco.tokens, image_slots=cfg.image_slots)
    data.batch_size = cfg.train.batch_size
    fit(module, data, cfg, out, name, steps, progress=progress, checkpoint=False, callbacks=callbacks)
    return module.model.cpu().eval()


def clip_stage(cfg: Config, data: VoCoDataModule, out: Path, progress: bool = True) -> ClipModule:
    data.set_task("clip")
    data.batch_size = cfg.train.clip_batch_size
    module = ClipModule(cfg, steps=cfg.train.clip_steps, tokenizer=data.tokenizer)
    if cfg.train.clip_steps:
        fit(module, data, cfg, out, "clip", cfg.train.clip_steps, progress=progress)
    return module


def stage_module(cfg: Config, name: str, mask: str, steps: int, teacher: VLMModule | None = None,
                 tokenizer=None) -> VLMModule:
    """A fresh `VLMModule` for one stage; with a `teacher` (a `VoCoVLM` or `VLMModule`), a
    `DistillModule` trained with `train.voco_objective` against it (`implicit`: no teacher used)."""
    objective = cfg.train.voco_objective if teacher is not None else "implicit"
    if objective == "implicit":
        return VLMModule(cfg, mask=mask, stage=name, steps=max(1, steps), tokenizer=tokenizer)
    from vocolab.training.distill import DistillModule

    return DistillModule(cfg, objective=objective, mask=mask, stage=name, steps=max(1, steps),
                         tokenizer=tokenizer).set_teacher(teacher)


def vlm_stage(cfg: Config, data: VoCoDataModule, out: Path, name: str, *, task: str, mask: str, steps: int,
              init: VLMModule | ClipModule | None, k: int | None = None, progress: bool = True,
              teacher: VLMModule | None = None) -> VLMModule:
    """One `VLMModule` stage initialised from the previous stage's weights; with a
    `teacher`, a `DistillModule` trained with `train.voco_objective` against it."""
    k = cfg.voco.tokens if k is None else k
    module = stage_module(cfg, name, mask, steps, teacher, tokenizer=data.tokenizer)
    if isinstance(init, ClipModule):
        module.model.load_vision_from_clip(init.clip)
    elif init is not None:
        module.model.load_backbone(init.model.state_dict())
    data.set_task(task, voco_tokens=k, image_slots=cfg.image_slots)
    data.batch_size = cfg.train.batch_size
    if steps:
        fit(module, data, cfg, out, name, steps, progress=progress)
    return module.eval()


def run_recipe(cfg: Config, out: str | Path, data: VoCoDataModule | None = None, progress: bool = True,
               stages: tuple[str, ...] = ("clip", "pretrain", "upper", "voco")) -> Trained:
    """Train the stages in order; returns every trained module and the stage times."""
    out = Path(out)
    seed_everything(cfg.seed, verbose=False)
    data = data or VoCoDataModule(cfg, turns=cfg.train.turns, progress=progress)
    data.setup()
    result = Trained(data=data)
    t = cfg.train
    if "voco" in stages and "upper" not in stages and t.voco_objective != "implicit":
        raise ValueError(f"run_recipe: the voco stage distils from the upper bound (train.voco_objective="
                         f"{t.voco_objective!r}); train the upper stage too or set train.voco_objective=implicit")
    plan = {
        "clip": lambda: clip_stage(cfg, data, out, progress),
        "pretrain": lambda: vlm_stage(cfg, data, out, "pretrain", task="caption", mask="causal",
                                      steps=t.pretrain_steps, init=result.clip, progress=progress),
        "upper": lambda: vlm_stage(cfg, data, out, "upper", task="qa", mask="causal", steps=t.instruct_steps,
                                   init=result.pretrain, progress=progress),
        "voco": lambda: vlm_stage(cfg, data, out, "voco", task="qa", mask="voco", steps=t.voco_steps,
                                  init=result.upper or result.pretrain, progress=progress, teacher=result.upper),
    }
    for name in stages:
        start = time.perf_counter()
        setattr(result, name, plan[name]())
        result.seconds[name] = round(time.perf_counter() - start, 1)
    return result
