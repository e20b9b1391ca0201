"""The few calls a notebook needs: set up, get a config, get trained models, run a study.

Notebooks teach the parts (masks, caches, objectives); getting a trained model to look at
is plumbing, and it lives here so that every notebook does it the same way and a
notebook never reaches into a command-line job's internals:

    info = lab.setup()                         # preset, mode and device, printed
    cfg = lab.main_config(info)                # the main job's config (shrunk in quick mode)
    trained = lab.train_recipe(cfg, "notebook03")
    model, cfg, heldout = lab.voco_model(info)  # the shipped VoCo model (or the quickstart's, or one trained now)
    upper, cfg, meta = lab.shipped("upper")    # any model the repository ships
    study = lab.study(lab.study_config(info))  # the studies' shared data and base model
    lab.run_sweep(...)                         # the studies, exactly as `vocolab sweep` runs them

Work folders live under the cache (`runs_folder`), never in the repository.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from vocolab.core.config import Config
from vocolab.core.runtime import RunInfo
from vocolab.core.runtime import setup as _setup
from vocolab.data.storage import cache_root
from vocolab.studies import scaling as scaling_grid  # the grid's sizes, token counts and step budget
from vocolab.studies.common import QUICK, Study, cell_steps, job_runs
from vocolab.studies.common import study_config as _study_config
from vocolab.studies.distill import run_distill_study
from vocolab.studies.mod import QUICK_CLIPS, run_mod_study
from vocolab.studies.quickstart import job_config
from vocolab.studies.scaling import run_scaling
from vocolab.studies.sweep import run_sweep
from vocolab.studies.temporal import K as TEMPORAL_K
from vocolab.studies.temporal import run_temporal_study


def setup(preset: str | None = None, seed: int = 0, *, minutes: dict | None = None) -> RunInfo:
    """Seed, pick the preset and print what this notebook runs with (`core.runtime.setup`)
    and, from `minutes` ({"quick": .., "cpu": .., "gpu": ..}, measured on this project's
    machines), about how long it takes in this mode."""
    info = _setup(preset, seed)
    if minutes:
        mode = "quick" if info.quick else ("gpu" if info.device.type == "cuda" else "cpu")
        where = {"quick": "in quick mode", "cpu": f"in real mode on a CPU ({info.preset})",
                 "gpu": f"in real mode on a GPU ({info.preset})"}[mode]
        if mode not in minutes:
            print(f"this notebook's time {where} has not been measured yet")
        elif minutes[mode] < 1:
            print(f"this notebook takes under a minute {where}")
        else:
            print(f"this notebook takes about {minutes[mode]:.0f} min {where}")
    return info


def runs_folder(name: str, fresh: bool = True) -> Path:
    """`<cache>/runs/<name>`, emptied first when `fresh`: a notebook's logs and checkpoints."""
    folder = cache_root() / "runs" / name
    if fresh:
        shutil.rmtree(folder, ignore_errors=True)
    return folder


def main_config(info: RunInfo, **overrides) -> Config:
    """The config `vocolab quickstart` runs for this notebook's preset and seed (shrunk in
    quick mode), with dotted-key `overrides`."""
    return job_config(info.preset, info.seed, overrides or None)


def study_config(info: RunInfo, **overrides) -> Config:
    """The config every study runs (shrunk in quick mode), with dotted-key `overrides`:
    its base model is the one the studies share."""
    return _study_config(info.preset, info.seed, overrides or None, QUICK)


def study_steps() -> int:
    """Training steps of one study cell (fewer in quick mode): a notebook's own cell trains as long."""
    return cell_steps(None)


def clip_config(cfg: Config) -> Config:
    """`cfg` with the clip split sizes the mixture-of-depths study uses (fewer in quick mode)."""
    from vocolab.core.runtime import quick_mode

    return cfg.override(**QUICK_CLIPS) if quick_mode() else cfg


def data(cfg: Config, kind: str = "scenes", tokenizer=None, progress: bool = True):
    """The `VoCoDataModule` of `cfg` (scenes or clips), loaded (generated on first use)."""
    from vocolab.data.module import VoCoDataModule

    module = VoCoDataModule(cfg, kind=kind, turns=cfg.train.turns, progress=progress, tokenizer=tokenizer)
    module.setup()
    return module


def train_recipe(cfg: Config, name: str, *, data_module=None, progress: bool = True,
                 stages: tuple[str, ...] = ("clip", "pretrain", "upper", "voco")):
    """Train the recipe's `stages` into a fresh `runs_folder(name)`; returns `training.recipe.Trained`
    (every trained module, the data and the stage seconds)."""
    from vocolab.training.recipe import run_recipe

    return run_recipe(cfg, runs_folder(name), data=data_module, progress=progress, stages=stages)


def shipped(name: str, preset: str = "nano"):
    """`(model, cfg, meta)` of a model the repository ships (`vocolab.shipped`: upper, voco,
    video, mod), in float32; one line says what made it and how it scored when shipped."""
    from vocolab.shipped import load_shipped

    model, cfg, meta = load_shipped(name, preset)
    made, check = meta.get("trained_by") or {}, meta["check"]
    print(f"loaded the shipped {preset} `{name}` model: trained by `{made.get('command', '?')}` at commit "
          f"{str(made.get('commit', '?'))[:8]}; {check['accuracy']:.3f} on the {check['questions']} questions of "
          f"the first {check['items']} held-out {check['kind']}")
    return model, cfg, meta


def use_shipped(info: RunInfo, retrain: bool = False) -> bool:
    """Whether a notebook shows the shipped models: for the nano preset unless `retrain`
    (a notebook's marked cell sets it to train from scratch instead)."""
    from vocolab.shipped import is_shipped

    return not retrain and info.preset == "nano" and is_shipped("voco")


def voco_model(info: RunInfo, work: str = "notebook04", retrain: bool = False):
    """(model, cfg, held-out split) of a trained VoCo model: the shipped nano model unless
    `retrain`; else the one `make quickstart` saved for this preset and seed (outside quick
    mode), when there is one; else the recipe trained now into `runs_folder(work)` (tiny in
    quick mode)."""
    from vocolab.data.split import Split
    from vocolab.models.checkpoint import load_checkpoint

    if use_shipped(info, retrain):
        model, cfg, _ = shipped("voco")
        return model, cfg, Split.load(cfg, "scenes", "heldout", progress=False)
    saved = job_runs("quickstart", info.preset, info.seed) / "checkpoints" / "voco"
    if saved.exists() and not info.quick:
        model, cfg, meta = load_checkpoint(saved)
        print(f"loaded {saved} (stage {meta.get('stage')}, trained {cfg.train.voco_steps} VoCo steps)")
        if cfg.train.voco_steps < info.config.train.voco_steps:
            print("note: this checkpoint comes from a quick-mode quickstart; `make quickstart` without "
                  "VOCOLAB_QUICK trains the real one")
        return model, cfg, Split.load(cfg, "scenes", "heldout", progress=False)
    cfg = main_config(info)
    if info.quick:
        cfg = cfg.override(**{"train.batch_size": 8, "train.clip_batch_size": 16})
    trained = train_recipe(cfg, work, progress=not info.quick)
    print(f"trained the recipe in {sum(trained.seconds.values()):.0f} s: {trained.seconds}")
    return trained.voco.model, cfg, trained.data.splits["heldout"]


def study_results(name: str, run, load_committed: bool = False) -> dict:
    """A study's results body: the committed `figures/<name>/results.json` when
    `load_committed` (and the file is there), else what `run()` returns (the study run
    here). One line says where it came from and what made it."""
    committed = Path(__file__).resolve().parents[1] / "figures" / name / "results.json"
    if load_committed and committed.exists():
        body, where = json.loads(committed.read_text()), f"loaded {committed}"
    else:
        body, where = run(), "ran here"
    p = body["provenance"]
    print(f"{where}: `{p['command']}` | commit {p['commit'][:8]} | {p['preset']} seed {p['seed']} | "
          f"{p['device']} | {body['eval']['examples']} held-out questions | {len(body['runs'])} runs | "
          f"{p['wall_s']:.0f} s")
    return body


def study(cfg: Config, limit: int | None = None, progress: bool = True) -> Study:
    """The studies' shared scene data, held-out questions and base (upper-bound) model,
    trained on first use and cached like `vocolab sweep`'s."""
    return Study.on_scenes(cfg, cell_steps(None), limit, progress)


__all__ = ["TEMPORAL_K", "RunInfo", "Study", "clip_config", "data", "main_config", "run_distill_study", "run_mod_study",
           "run_scaling", "run_sweep", "run_temporal_study", "runs_folder", "scaling_grid", "setup", "shipped", "study",
           "study_config", "study_results", "study_steps", "train_recipe", "use_shipped", "voco_model"]
