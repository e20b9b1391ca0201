"""The VoCo-LLaMA training recipe as one chain of Lightning stages.

    clip      contrastive mini CLIP on (scene, caption)
    pretrain  projector + LLM learn to caption with all image tokens (CLIP frozen,
              its features computed once)
    upper     instruct on QA under the `causal` mask: the upper bound; while it is below
              `train.instruct_retry_below` on the validation split (a slow seed still on
              its plateau), further cosine cycles `upper-retry`, `upper-retry2` go on from it
    voco      instruct on QA under the `voco` mask with K VoCo tokens, initialised
              from the upper-bound model (it already answers; now it must compress)
              and, per `train.voco_objective`, distilled from it: by default its text
              tokens' hidden states are pulled towards the upper bound's (`training.distill`);
              while its retention on the validation split is under
              `train.voco_retry_below`, further cycles `voco-retry`, `voco-retry2` go on

The lower bound needs no training: it is the upper-bound model evaluated under
the `voco` mask. Each stage logs to CSV under `out/<stage>/` and checkpoints there.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from lightning import seed_everything

from vocolab.core.config import Config
from vocolab.core.runtime import is_main_process
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
    resumed: list[str] = field(default_factory=list)  # stages loaded or continued from an interrupted run
    # on the validation split: the retry checks' accuracies and the clip stage's last retrieval check
    validation: dict[str, float] = field(default_factory=dict)


def fit(module, data, cfg: Config, out: Path, name: str, steps: int, *, progress: bool = True,
        checkpoint: bool = True, callbacks=(), resume_from: Path | None = None, val_every: int | None = None) -> None:
    """Train `module` on `data` for `steps` with the one Trainer every stage uses, logging to
    `out/<name>/` (checkpoints there too, unless `checkpoint=False`: the studies' cells), or
    go on from the checkpoint `resume_from` (exactly: optimiser, schedule and data order).
    With `val_every`, the module's validation step runs on the validation split that often
    (for a stopping rule among `callbacks`); otherwise never.

    Ctrl-C ends Lightning's fit with `exit(1)` after a graceful shutdown; it comes out of
    here as the `KeyboardInterrupt` it was, so the command can say "interrupted"."""
    if checkpoint and resume_from is None and is_main_process():
        shutil.rmtree(out / name, ignore_errors=True)  # no stale checkpoints from an earlier run of this stage
    trainer = make_trainer(cfg, out, name, steps, val_every=val_every, progress=progress, checkpoint=checkpoint,
                           limit_val_batches=1.0 if val_every else 0, callbacks=list(callbacks))
    try:
        trainer.fit(module, datamodule=data, ckpt_path=None if resume_from is None else str(resume_from))
    except SystemExit:
        if trainer.interrupted:
            raise KeyboardInterrupt from None
        raise
    if checkpoint:  # the final weights, whatever step the periodic checkpoints fell on
        trainer.save_checkpoint(out / name / "checkpoints" / "last.ckpt")


def fine_tune(module, data, cfg: Config, out: Path, name: str, steps: int, *, init, task: str = "qa",
              k: int | tuple[int, ...] | None = None, progress: bool = True, callbacks=()):
    """A study's cell: `module` (already built, after seeding) starts from `init`'s weights
    (a trained `VoCoVLM`) and trains `steps` steps on `data` without checkpoints, at `k`
    VoCo tokens (default `voco.tokens`; a tuple: each batch draws one). Returns the trained
    model on the CPU in eval mode."""
    module.model.load_backbone(init.state_dict())
    data.set_task(task, voco_tokens=cfg.voco.tokens if k is None else k, image_slots=cfg.image_slots)
    data.batch_size = cfg.train.batch_size
    fit(module, data, cfg, out, name, steps, progress=progress, checkpoint=False, callbacks=callbacks)
    return module.model.cpu().eval()


def stage_key(cfg: Config, name: str, tokenizer, voco_tokens: int | tuple[int, ...] | None = None) -> str:
    """What a stage's weights depend on: the config, the vocabulary, the stage and, when it
    trains at other VoCo token counts than `voco.tokens` (`vlm_stage`'s `k`), those."""
    body = {"cfg": cfg.to_dict(), "stage": name, "vocabulary": sorted(tokenizer.get_vocab().items())}
    if voco_tokens not in (None, cfg.voco.tokens):
        body["voco_tokens"] = voco_tokens
    text = json.dumps(body, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def train_stage(module, data, cfg: Config, out: Path, name: str, steps: int, *, progress: bool = True,
                resume: bool = False, **how) -> bool:
    """`fit` one recipe stage, recording in `out/<name>/finished.json` that it finished.

    With `resume`, a stage that finished with the same config is not trained again (its
    final weights are loaded) and one that was interrupted goes on from its last checkpoint.
    Returns True when the stage was (re)loaded rather than trained from the start; `how`
    (callbacks, val_every) goes to `fit`."""
    folder, key = out / name, stage_key(cfg, name, data.tokenizer, data.voco_tokens)
    last = folder / "checkpoints" / "last.ckpt"
    marks = {mark: folder / f"{mark}.json" for mark in ("started", "finished")}
    read = lambda mark: json.loads(marks[mark].read_text()).get("key") if marks[mark].exists() else None  # noqa: E731
    if resume and last.is_file() and read("finished") == key:
        module.load_state_dict(torch.load(last, map_location="cpu", weights_only=False)["state_dict"])
        module.resumed = True
        return True
    resume_from = last if resume and last.is_file() and read("started") == key else None
    main = is_main_process()  # the extra processes of a data-parallel run leave the files to the first
    if resume_from is None and main:
        shutil.rmtree(folder, ignore_errors=True)
    if main:
        folder.mkdir(parents=True, exist_ok=True)
        marks["started"].write_text(json.dumps({"key": key}) + "\n")
    fit(module, data, cfg, out, name, steps, progress=progress, resume_from=resume_from, **how)
    if main:
        marks["finished"].write_text(json.dumps({"key": key}) + "\n")
    module.resumed = resume_from is not None
    return module.resumed


def clip_stage(cfg: Config, data: VoCoDataModule, out: Path, progress: bool = True,
               resume: bool = False) -> ClipModule:
    """The mini CLIP for `train.clip_steps`, or with `train.clip_target` until its retrieval on
    the validation split reaches that target (Lightning's `EarlyStopping` at a threshold; the
    steps are the cap). Every later stage sees images only through these frozen features: on
    the H200, `small`'s 150 steps ended at retrieval 0.16-0.19 on its last training batch and
    its upper bound at validation 0.47 (RESULTS.md)."""
    t = cfg.train
    data.set_task("clip")
    data.batch_size = t.clip_batch_size
    module = ClipModule(cfg, steps=t.clip_steps, tokenizer=data.tokenizer)
    how = {}
    if t.clip_target:
        from lightning.pytorch.callbacks import EarlyStopping

        stop = EarlyStopping("val/retrieval_acc", mode="max", stopping_threshold=t.clip_target,
                             patience=t.clip_steps, check_on_train_epoch_end=False)  # only the threshold stops it
        how = {"callbacks": [stop], "val_every": t.clip_check_every}
    if t.clip_steps:
        train_stage(module, data, cfg, out, "clip", t.clip_steps, progress=progress, resume=resume, **how)
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
              init: VLMModule | ClipModule | None, k: int | tuple[int, ...] | None = None, progress: bool = True,
              teacher: VLMModule | None = None, resume: bool = False) -> VLMModule:
    """One `VLMModule` stage initialised from the previous stage's weights; with a
    `teacher`, a `DistillModule` trained with `train.voco_objective` against it. `k`: the
    VoCo tokens per image (default `voco.tokens`), or a tuple of Ks each batch draws from."""
    k = cfg.voco.tokens if k is None else k
    module = stage_module(cfg, name, mask, steps, teacher, tokenizer=data.tokenizer)
    if isinstance(init, ClipModule):
        module.model.load_vision_from_clip(init.clip)
    elif init is not None:
        module.model.load_backbone(init.model.state_dict())
    data.set_task(task, voco_tokens=k, image_slots=cfg.image_slots)
    data.batch_size = cfg.train.batch_size
    if steps:
        train_stage(module, data, cfg, out, name, steps, progress=progress, resume=resume)
    return module.eval()


def validation_accuracy(module: VLMModule, data: VoCoDataModule, mask: str = "causal") -> float:
    """Exact match on the validation split (never the held-out one) under `mask` (`voco`: at
    `voco.tokens`), with the random state left as it was: a run that needs no retry trains
    exactly as before."""
    from vocolab.data.scenes import FAMILIES
    from vocolab.evaluation.heldout import Questions, model_run

    val = data.split("val")
    with torch.random.fork_rng(devices=[]):
        run = model_run(module.model.eval(), data.tokenizer, val, Questions.of(val), FAMILIES, name="validation",
                        method="voco" if mask == "voco" else "full", mask=mask, k=module.cfg.voco.tokens,
                        progress=False)
    return round(run["accuracy"], 4)


def retried(cfg: Config, data: VoCoDataModule, out: Path, stage: VLMModule, result: Trained, *, name: str,
            steps: int, passed: bool, progress: bool, resume: bool, **how) -> VLMModule:
    """`stage` again from where it ended, as `name` (one cosine cycle of `steps`), unless it
    `passed` its check; records the time, the retry's own validation accuracy and a resume."""
    tell(out, result, "passed" if passed else f"below the bar: {name}, {steps:,} more steps", progress)
    if passed:
        return stage
    start = time.perf_counter()
    retry = vlm_stage(cfg, data, out, name, task="qa", steps=steps, init=stage, progress=progress, resume=resume,
                      **how)
    result.seconds[name] = round(time.perf_counter() - start, 1)
    result.validation[name] = validation_accuracy(retry, data, how["mask"])
    tell(out, result, f"after {name}", progress)
    if getattr(retry, "resumed", False):
        result.resumed.append(name)
    return retry


def tell(out: Path, result: Trained, verdict: str, progress: bool) -> None:
    """What a retry check saw, in `out/validation.json` and (with progress) on the console, so a
    run cut short (a lab's time limit; the H200 run that ended in its upper-retry) still says
    how far its model had got before the results file is written."""
    if not is_main_process():
        return
    out.mkdir(parents=True, exist_ok=True)
    (out / "validation.json").write_text(json.dumps(result.validation, indent=2) + "\n")
    if progress:
        seen = ", ".join(f"{name} {accuracy:.3f}" for name, accuracy in result.validation.items())
        print(f"validation: {seen} ({verdict})", flush=True)


def retry_upper(cfg: Config, data: VoCoDataModule, out: Path, upper: VLMModule, result: Trained,
                progress: bool = True, resume: bool = False) -> VLMModule:
    """The upper stage again from where it ended, one cosine cycle of `train.instruct_retry`
    x its steps at a time, while its validation accuracy is under `train.instruct_retry_below`,
    at most `train.instruct_retries` cycles (`upper-retry`, `upper-retry2`, ...).

    Why: at nano a seed binds colour to objects after 600 to over 2,000 steps; seed 2 ends its
    2,200 on the plateau (validation 0.57). One longer cycle (3,300 steps) bound colour but not
    `spatial` (0.805, `spatial` 0.29); a second cycle of 1,650 steps from the first's end reached
    0.848 with AVX-512 kernels and 0.869 with AVX2 ones, `spatial` still 0.42 there; a third
    took it to 0.949, `spatial` 0.76 (RESULTS.md). Seeds that bound pass the check and are left
    as they were."""
    t = cfg.train
    steps = round(t.instruct_retry * t.instruct_steps)
    if not steps or not t.instruct_retries:  # no retry configured, or no upper stage to continue
        return upper
    result.validation["upper"] = validation_accuracy(upper, data)
    return cycles(cfg, data, out, upper, result, retries=t.instruct_retries, steps=steps, progress=progress,
                  resume=resume, passed=lambda stage: result.validation[stage.stage] >= t.instruct_retry_below,
                  mask="causal")


def cycles(cfg: Config, data: VoCoDataModule, out: Path, stage: VLMModule, result: Trained, *, retries: int,
           passed, **retry) -> VLMModule:
    """`retried` again and again (`<stage>-retry`, `<stage>-retry2`, ...) while `passed(last
    cycle)` says no, `retries` cycles at most: one loop for the upper and the voco rules."""
    base = stage.stage
    for cycle in range(1, retries + 1):
        ok = passed(stage)  # judged on the last cycle's validation figure
        stage = retried(cfg, data, out, stage, result, name=f"{base}-retry" + (str(cycle) if cycle > 1 else ""),
                        passed=ok, **retry)
        if ok:
            break
    return stage


def retry_voco(cfg: Config, data: VoCoDataModule, out: Path, voco: VLMModule, result: Trained,
               progress: bool = True, resume: bool = False) -> VLMModule:
    """The voco stage again from where it ended, one cosine cycle of `train.voco_retry` x its
    steps at a time against the same teacher, while its retention on the validation split (as
    in the results: `evaluation.metrics.retention` between the lower and upper bounds) is under
    `train.voco_retry_below`, at most `train.voco_retries` cycles (`voco-retry`, `voco-retry2`);
    bounds that do not separate leave nothing to judge by.

    Why: at nano seed 1's voco stage was still rising when its 2,100 steps ended (validation
    accuracy 0.52 / 0.64 / 0.72 / 0.74 at its quarters; held-out retention 0.75); one 3,150-step
    cycle reached validation retention 0.81 (RESULTS.md). Seed 2 with AVX2 kernels, whose upper
    bound took three cycles, ended its one retry at 0.78; a third cycle reached 0.86 (RESULTS.md)."""
    from vocolab.evaluation.metrics import retention

    t = cfg.train
    steps = round(t.voco_retry * t.voco_steps)
    if not steps or not t.voco_retries or result.upper is None:  # no retry configured, or no bound to judge by
        return voco
    seen = result.validation
    if "upper" not in seen:
        seen["upper"] = validation_accuracy(result.upper, data)
    seen["lower"] = validation_accuracy(result.upper, data, "voco")
    seen["voco"] = validation_accuracy(voco, data, "voco")

    def passed(stage: VLMModule) -> bool:
        kept = retention(seen[stage.stage], seen["lower"], seen[result.upper.stage])
        return kept is None or kept >= t.voco_retry_below

    return cycles(cfg, data, out, voco, result, retries=t.voco_retries, steps=steps, progress=progress,
                  resume=resume, passed=passed, mask="voco", teacher=result.upper)


def run_recipe(cfg: Config, out: str | Path, data: VoCoDataModule | None = None, progress: bool = True,
               stages: tuple[str, ...] = ("clip", "pretrain", "upper", "voco"), resume: bool = False) -> Trained:
    """Train the stages in order; returns every trained module and the stage times. With
    `resume` (a rerun after an interruption), finished stages are loaded, not retrained,
    and an interrupted stage goes on from its last checkpoint (`train_stage`)."""
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
        "clip": lambda: clip_stage(cfg, data, out, progress, resume=resume),
        "pretrain": lambda: vlm_stage(cfg, data, out, "pretrain", task="caption", mask="causal",
                                      steps=t.pretrain_steps, init=result.clip, progress=progress, resume=resume),
        "upper": lambda: vlm_stage(cfg, data, out, "upper", task="qa", mask="causal", steps=t.instruct_steps,
                                   init=result.pretrain, progress=progress, resume=resume),
        "voco": lambda: vlm_stage(cfg, data, out, "voco", task="qa", mask="voco", steps=t.voco_steps,
                                  init=result.upper or result.pretrain, progress=progress, teacher=result.upper,
                                  resume=resume),
    }
    for name in stages:
        start = time.perf_counter()
        module = plan[name]()
        setattr(result, name, module)
        result.seconds[name] = round(time.perf_counter() - start, 1)
        if name == "clip" and module.val_retrieval is not None:  # trained to a retrieval target
            result.validation["clip"] = module.val_retrieval
        if getattr(module, "resumed", False):
            result.resumed.append(name)
        if name == "upper":  # a slow seed's upper stage goes on for more cycles
            result.upper = retry_upper(cfg, data, out, module, result, progress, resume)
        if name == "voco":  # and so does a slow seed's voco stage
            result.voco = retry_voco(cfg, data, out, module, result, progress, resume)
    return result
