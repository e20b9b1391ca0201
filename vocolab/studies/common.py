"""What every study shares, so that each study file holds only what makes it different.

A study (sweep, distill, temporal, mod, scaling) is a grid of resumable cells
(`studies.cells`) that start from one base model: the recipe's clip -> pretrain -> upper
chain, trained once per preset and seed and cached under the study runs folder
(`base_model`). `Study` holds what the cells read (config, data, held-out questions, the
base model); `study_config` builds and checks the config every job starts from, and
`finish` writes the results file every study ends with.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from vocolab.core.config import Config
from vocolab.core.presets import preset
from vocolab.core.runtime import quick_mode
from vocolab.studies.cells import key_of, log_invocation, model_id

SWEEP_STEPS = 400  # fine-tuning steps of every trained cell (nano)
QUICK_STEPS = 5  # the same in quick mode
# quick mode (VOCOLAB_QUICK=1): how every study shrinks the preset
QUICK = {"data.train_scenes": 200, "data.heldout_scenes": 40, "data.val_scenes": 40, "train.clip_steps": 5,
         "train.pretrain_steps": 5, "train.instruct_steps": 5}


def study_config(preset_name: str, seed: int, overrides: dict | None, quick_sizes: dict) -> Config:
    """The preset with its seed, shrunk by `quick_sizes` in quick mode, then the user's
    overrides: how every job (quickstart, sweep, studies) builds its config.

    Beyond the config's own validation, it checks what only the renderer and the zoo know
    (colours, shapes and sizes that can be drawn; a compressor that exists and has a fixed
    K), so bad input fails here, before any data is generated or model trained."""
    from vocolab.data.vocab import check_data_config
    from vocolab.zoo.registry import check_compressor_config

    cfg = preset(preset_name, seed=seed)
    if quick_mode():
        cfg = cfg.override(**quick_sizes)
    cfg = cfg.override(**overrides) if overrides else cfg
    check_data_config(cfg.data)
    if cfg.compress.method != "none":
        check_compressor_config(cfg)
    return cfg


def cell_steps(steps: int | None) -> int:
    """Training steps of a study's trained cell: as given, else the study default (fewer in quick mode)."""
    return steps if steps is not None else (QUICK_STEPS if quick_mode() else SWEEP_STEPS)


def train_clip_count(train_clips: int | None, default: int, quick_cap: int) -> int:
    """A clip study's training clips: `train_clips` (more than `data.train_clips` without changing
    the config, so the shared scene model stays the other studies'), else `default`; at most
    `quick_cap` in quick mode. Checked before anything is generated or trained."""
    if train_clips is not None and train_clips < 1:
        raise ValueError(f"train_clips must be >= 1, got {train_clips}")
    n = train_clips or default
    return min(n, quick_cap) if quick_mode() else n


def job_runs(job: str, preset: str, seed: int) -> Path:
    """`<cache>/runs/<job>-<preset>-seed<seed>` (with `-quick` in quick mode: a few-step
    model must never pass for a real one): where a job keeps its logs and checkpoints."""
    from vocolab.data.storage import cache_root

    return cache_root() / "runs" / f"{job}-{preset}-seed{seed}{'-quick' if quick_mode() else ''}"


BASE_FOLDER = "upper-model"  # the base model's checkpoint, under the studies' runs folder


def runs_dir(cfg: Config) -> Path:
    """Where the shared base model and training logs of the studies live (cache, not figures)."""
    return job_runs("sweep", cfg.preset, cfg.seed)


def base_model(cfg: Config, runs: Path, data, progress: bool = True):
    """The upper-bound model every study starts from (clip -> pretrain -> upper), trained
    once per config and seed and kept as a checkpoint under `runs/upper-model`."""
    from vocolab.data.vocab import words
    from vocolab.models.checkpoint import load_if_saved_for, save_checkpoint
    from vocolab.training.recipe import run_recipe

    folder = runs / BASE_FOLDER
    meta_key = key_of({"cfg": cfg.to_dict(), "vocabulary": words(cfg.data)})
    saved = load_if_saved_for(folder, sweep_key=meta_key)
    if saved is not None:
        print(reuse_message(folder, saved[2].get("trained_at"), code_state()))
        return saved[0].eval()
    stages = ("clip", "pretrain", "upper")
    source = finished_quickstart(cfg, data.tokenizer, stages)
    if source is not None:  # the same three stages, already trained by `vocolab quickstart`
        print(f"loading the base (upper-bound) model from the quickstart's run in {source}")
    else:
        print("training the base model (clip -> pretrain -> upper)")
    # stages finished by an interrupted earlier call are loaded, not trained again
    trained = run_recipe(cfg, source or runs / "base", data=data, progress=progress, stages=stages, resume=True)
    model = trained.upper.model.cpu().eval()
    save_checkpoint(model, cfg, folder, {"sweep_key": meta_key, "stage_seconds": trained.seconds,
                                         "trained_at": code_state()})
    return model


def base_record(runs: Path) -> dict:
    """What a results file says of the base model its study stood on: the checkpoint's folder under the
    cache and the commit it was trained at (None: saved before commits were recorded). The model is
    cached by config and seed, not by code, so a study's own commit need not be its base model's."""
    from vocolab.models.checkpoint import META

    meta = runs / BASE_FOLDER / META
    trained_at = json.loads(meta.read_text()).get("trained_at") if meta.is_file() else None
    return {"folder": f"runs/{runs.name}/{BASE_FOLDER}", "trained_at": trained_at}


def code_state() -> dict:
    """The checkout's commit and whether tracked files differ from it (`reporting.provenance.git_state`)."""
    from vocolab.reporting.provenance import git_state

    commit, dirty = git_state()
    return {"commit": commit, "dirty": dirty}


def reuse_message(folder: Path, trained_at: dict | None, now: dict) -> str:
    """What `base_model` prints when it loads its cached model. The cache is keyed on config and seed,
    not on the code (retraining the base model after every edit would cost most of a study), so a
    model trained by other code is loaded all the same: the message then names both commits and how
    to train it anew, since every study's figures stand on that model. The commit recorded is the one
    the checkpoint was saved at; stages loaded from the quickstart's or an interrupted call's runs may
    be older (their `finished.json` keys hold config, not code)."""
    if now["commit"] == "unknown":  # not run from a git checkout: nothing to compare
        return f"reusing the base (upper-bound) model in {folder}"
    if trained_at == now and now["dirty"] is False:
        return f"reusing the base (upper-bound) model in {folder} (trained at this commit, {now['commit'][:12]})"
    def said(state: dict) -> str:
        return state["commit"][:12] + (" with uncommitted changes" if state.get("dirty") else "")

    then = said(trained_at) if trained_at else "an unrecorded commit"
    return (f"WARNING: reusing the base (upper-bound) model in {folder}, trained at {then}; this checkout is "
            f"{said(now)}. Delete that folder to train it on this code.")


def finished_quickstart(cfg: Config, tokenizer, stages: tuple[str, ...]) -> Path | None:
    """The quickstart's runs folder for this preset and seed when it holds every one of
    `stages` finished with exactly this config (`training.recipe.stage_key`), else None: the
    studies then start from the very models the quickstart reports on, without training them again."""
    from vocolab.training.recipe import stage_key

    folder = job_runs("quickstart", cfg.preset, cfg.seed)
    for name in stages:
        marker = folder / name / "finished.json"
        if not marker.is_file() or json.loads(marker.read_text()).get("key") != stage_key(cfg, name, tokenizer):
            return None
    return folder


@dataclass
class Study:
    """What the cells of a scene study read: config, cell steps, the runs folder, the scene
    data, the held-out questions and the base (upper-bound) model."""

    cfg: Config
    steps: int
    runs: Path
    data: object  # a VoCoDataModule
    qs: object  # the held-out `Questions`
    upper: torch.nn.Module
    progress: bool = True
    families: tuple = field(default=())

    @classmethod
    def on_scenes(cls, cfg: Config, steps: int, limit: int | None, progress: bool = True,
                  runs: Path | None = None) -> "Study":
        """Load the scene data and the held-out questions, then the base model (trained on
        the first call for this config and seed)."""
        from vocolab.data.module import VoCoDataModule
        from vocolab.data.scenes import FAMILIES
        from vocolab.evaluation.heldout import Questions

        runs = runs_dir(cfg) if runs is None else runs
        data = VoCoDataModule(cfg, turns=cfg.train.turns, progress=progress)
        data.setup()
        qs = Questions.of(data.splits["heldout"], limit)
        upper = base_model(cfg, runs, data, progress)
        return cls(cfg, steps, runs, data, qs, upper, progress, FAMILIES)

    @property
    def base_id(self) -> str:
        return model_id(self.upper)

    def probe(self, model=None) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """The one held-out image and question costs are measured on: pixels `[1, H, W, 3]`,
        `model`'s CLIP features of them (default: the base model's) and the question's ids."""
        model = self.upper if model is None else model
        heldout, item = self.data.splits["heldout"], int(self.qs.item[0])
        pixels = torch.from_numpy(heldout.images[item : item + 1])
        with torch.no_grad():
            features = model.encode_images(pixels)
        return pixels, features, self.data.tokenizer(self.qs.questions[0], add_special_tokens=False)["input_ids"]

    def bounds(self) -> list[dict]:
        """Upper, lower (K = 1) and blind on the held-out questions."""
        from vocolab.evaluation.heldout import bound_runs

        return bound_runs(self.upper, self.data.tokenizer, self.data.splits["train"], self.data.splits["heldout"],
                          self.qs, self.families, k_lower=1, progress=self.progress)


def finish(name: str, out: Path, command: str, start: float, cfg: Config, eval_info: dict, runs: list[dict],
           details: dict, write: Callable[[dict, Path], None], *, ran: list | None = None,
           failed: list | None = None, sections: dict | None = None, base: Path | None = None) -> dict:
    """The study's results body (provenance, the held-out set, every run, the config and
    the study's own `details` under `name`, then any further `sections`), written by `write`
    to `out`. With `ran`, this
    invocation is appended to `out/invocations.json` and the history kept in the body: a
    resumed grid then still records the cost of every run that made its cells. With `base` (the runs
    folder of the base model the study started from), `base_model` says which model that was (`base_record`)."""
    from vocolab.reporting.provenance import provenance
    from vocolab.reporting.results import results

    wall = time.perf_counter() - start
    extra = {}
    if ran is not None:
        extra["invocations"] = log_invocation(out, command, wall, ran, failed or [])
    if base is not None:
        extra["base_model"] = base_record(base)
    body = results(provenance(command, cfg.preset, cfg.seed, wall, out), eval_info, runs, config=cfg.to_dict(),
                   **extra, **{name: details}, **(sections or {}))
    write(body, out)
    return body


__all__ = ["QUICK", "QUICK_STEPS", "SWEEP_STEPS", "Study", "base_model", "base_record", "cell_steps", "code_state",
           "finish", "reuse_message", "runs_dir", "study_config", "train_clip_count"]
