"""`vocolab temporal`: temporal tuning of a VoCo model on video clips (training stage `temporal`).

Every model starts from the shared upper-bound *scene* model (the sweep's base model, trained once
per preset and seed; with `--off-lattice-steps N` that model tuned N steps on off-lattice scenes,
`studies.off_lattice`) and is trained for the same steps with the same seed (the temporal cell and
video-upper as their own settings say, `studies.temporal_settings`); all are evaluated on the same
held-out clips (T frames):

    voco-image    the image VoCo model: the base model fine-tuned on scene QA under
                  the `voco` mask with K tokens (with the recipe's `train.voco_objective`,
                  distilled from the base model as in `training.recipe`), evaluated on clips
                  under the `video` mask without any video training (each frame's K VoCo
                  tokens see only that frame; the question sees every frame's VoCo tokens)
    temporal      that model (or video-upper, or their merge) continued on clip QA under the `video` mask,
                  distilled from video-upper (what the image VoCo model learns from the scene
                  model, the video one learns from the clip upper bound)
    avgpool       average pooling of each frame to K tokens (zoo compressor) from the
                  base model, trained on clip QA, causal mask
    video-upper   the base model trained on clip QA with every frame's V tokens,
                  causal: the upper bound
    lower         video-upper evaluated under the `video` mask with K VoCo tokens per
                  frame: the lower bound (as the images' lower bound is defined)
    middle-frame  the base model trained on clip QA the same way, but shown only each
                  clip's middle frame (all V tokens): what one frame teaches a trained
                  model; `best-single-frame` the symbolic answerer that sees one frame's
                  full state (`evaluation.baselines`); `blind` the question alone

`frame_perception` asks the shared scene model the *scene* families on held-out
scenes and on the clips' middle frames: clip objects sit between lattice cells, scene
objects never do, and the gap says how much perception the clip models must relearn.

Answers are read *streaming*: VoCo models compress frame by frame (`inference.compression.compress_frame`)
and answer after every frame, the others from the first t frames; so "accuracy against frames" (t = 1..T)
comes from the pass that gives the reported accuracy (t = T). Many clip questions cannot be answered from
fewer frames (a direction needs two, a visible count all of them): that is what the curve shows.

Resumable: each trained model is one cell (`studies.cells.run_cells`) under `out/cells/`; trained weights
are kept under the study's runs folder, so a cell that needs another cell's model (temporal needs
voco-image and video-upper, lower needs video-upper) loads it instead of training it again.
"""

from __future__ import annotations

import time
from functools import cached_property, partial
from pathlib import Path

import torch
from lightning import seed_everything

from vocolab.core.config import Config
from vocolab.core.runtime import quick_mode
from vocolab.evaluation.clips import clip_run
from vocolab.reporting.temporal import write_temporal_outputs
from vocolab.studies.cells import architecture, key_of, model_id, run_cells
from vocolab.studies.common import QUICK, cell_steps, finish, runs_dir, study_config, train_clip_count
from vocolab.studies.off_lattice import check_steps, clip_start_model
from vocolab.studies.temporal_settings import CellSettings
from vocolab.zoo.costs import frame_costs

K = 2

CELLS = ("voco-image", "temporal", "avgpool", "video-upper", "lower", "middle-frame")  # the tables' order
TRAINING_ORDER = ("voco-image", "video-upper", "temporal", "avgpool", "lower", "middle-frame")  # teachers first

# quick mode: clip split sizes and the clip-training batch (a clip is T images long); scenes: `sweep.QUICK`
QUICK_CLIPS = {"train": 200, "heldout": 40, "batch_size": 8}


def check_settings(cfg: Config, k: int, steps: int, settings: CellSettings) -> None:
    if not 1 <= k < cfg.data.image_tokens:
        raise ValueError(f"temporal: k={k} is outside 1..V-1 (V={cfg.data.image_tokens}; K=V is the upper bound)")
    if steps < 1:
        raise ValueError(f"temporal: steps must be >= 1, got {steps}")
    settings.check()


class TemporalStudy:
    """State shared by the cells: config, scene and clip data, the base model, held-out questions."""

    def __init__(self, cfg: Config, runs: Path, *, k: int, steps: int, limit: int | None, progress: bool,
                 train_clips: int | None = None, off_lattice_steps: int = 0, settings: CellSettings = CellSettings()):
        from vocolab.data.clips import TEMPORAL_FAMILIES
        from vocolab.data.module import VoCoDataModule
        from vocolab.evaluation.heldout import Questions

        check_settings(cfg, k, steps, settings)  # before any data or training
        self.cfg, self.runs, self.k, self.steps, self.progress = cfg, runs, k, steps, progress
        self.settings = settings
        self.temporal_steps, self.upper_steps = settings.temporal_steps or steps, settings.upper_steps or steps
        self.families = TEMPORAL_FAMILIES
        d = cfg.data
        self.sizes = {"train": train_clip_count(train_clips, d.train_clips, QUICK_CLIPS["train"]),
                      "heldout": min(d.heldout_clips, QUICK_CLIPS["heldout"]) if quick_mode() else d.heldout_clips}
        self.upper_sizes = self.sizes | {"train": train_clip_count(settings.upper_clips, self.sizes["train"],
                                                                   QUICK_CLIPS["train"])}
        self.scenes = VoCoDataModule(cfg, turns=cfg.train.turns, progress=progress)
        self.scenes.setup()
        self.clips = VoCoDataModule(cfg, kind="clips", turns=cfg.train.turns, train_n=self.sizes["train"],
                                    heldout_n=self.sizes["heldout"], progress=progress,
                                    tokenizer=self.scenes.tokenizer)
        self.clips.setup()
        self.heldout = self.clips.splits["heldout"]
        self.tokenizer = self.clips.tokenizer
        self.qs = Questions.of(self.heldout, limit)
        self.upper = clip_start_model(cfg, runs, self.scenes, off_lattice_steps, progress)
        self.base_id, self.base_architecture = model_id(self.upper), architecture(self.upper)
        self._models: dict[str, object] = {}

    def steps_of(self, name: str) -> int:
        """Training steps of a cell's model: the study's, or the temporal cell's or video-upper's own if given."""
        return {"temporal": self.temporal_steps, "video-upper": self.upper_steps}.get(name, self.steps)

    @cached_property
    def upper_clips(self):
        """video-upper's clip data: the study's, or its own training clips (the same held-out ones)."""
        return self.clips if self.upper_sizes == self.sizes else self._clip_data(self.cfg, self.upper_sizes["train"])

    @cached_property
    def temporal_clips(self):
        """The temporal cell's clip data: the study's, or the same clips with its own questions per training clip."""
        own = self.settings.temporal_questions
        return self._clip_data(self.cell_cfg("temporal"), self.sizes["train"]) if own else self.clips

    def _clip_data(self, cfg: Config, train_n: int):
        from vocolab.data.module import VoCoDataModule

        data = VoCoDataModule(cfg, kind="clips", turns=self.cfg.train.turns, train_n=train_n,
                              heldout_n=self.sizes["heldout"], progress=self.progress, tokenizer=self.tokenizer)
        data.setup()
        return data

    @property
    def frames(self) -> int:
        return self.cfg.data.frames

    @property
    def middle(self) -> int:
        return self.frames // 2

    # -- keys -----------------------------------------------------------------------------------
    def model_key(self, name: str) -> str:
        """What a trained model depends on (temporal also on its teacher, video-upper)."""
        own = ({"teacher": self.model_key("video-upper")} | self.settings.temporal_key()) if name == "temporal" else {}
        return key_of({"model": name, "cfg": self.cell_cfg(name).to_dict(), "k": self.k, "steps": self.steps_of(name),
                       "base": self.base_id, "architecture": self.base_architecture,
                       "clips": self.upper_sizes if name == "video-upper" else self.sizes} | own)

    def cell_key(self, name: str) -> str:
        model = self.model_key("video-upper" if name == "lower" else name)
        return key_of({"cell": name, "model": model, "questions": len(self.qs)})

    # -- models ---------------------------------------------------------------------------------
    def cell_cfg(self, name: str) -> Config:
        """The config a model is trained with (the clip-trained ones with a smaller batch in quick mode)."""
        settings = {
            "voco-image": {"voco.tokens": self.k, "voco.mask": "voco"},
            "temporal": {"voco.tokens": self.k, "voco.mask": "video"} | self.settings.temporal_overrides(),
            "avgpool": {"compress.method": "avgpool", "compress.tokens": self.k, "voco.tokens": 0,
                        "voco.mask": "causal"},
            "video-upper": {"voco.mask": "causal"},
            "middle-frame": {"voco.mask": "causal"},
        }
        if name not in settings:
            raise ValueError(f"temporal: no model called {name!r}")
        if quick_mode() and name != "voco-image":
            batch = min(settings[name].get("train.batch_size", self.cfg.train.batch_size), QUICK_CLIPS["batch_size"])
            settings[name]["train.batch_size"] = batch
        return self.cfg.override(**settings[name])

    def model(self, name: str, train: bool = True):
        """The trained model `name`: from memory, from its saved checkpoint, or trained now
        (`train=False`: None instead of training)."""
        from vocolab.models.checkpoint import load_if_saved_for, save_checkpoint

        if name in self._models:
            return self._models[name]
        folder = self.runs / "temporal" / "models" / name
        key = self.model_key(name)
        saved = load_if_saved_for(folder, model_key=key)
        if saved is not None:
            self._models[name] = saved[0].eval()
            return self._models[name]
        if not train:
            return None
        t0 = time.perf_counter()
        if name == "voco-image":  # scene QA, voco mask, distilled from the base model like the recipe's voco stage
            model = self._fit(name, self.scenes, "voco", self.upper, teacher=self.upper)
        elif name == "temporal":  # voco-image (video-upper, their merge) on clips under the video mask, distilled
            start = self.settings.temporal_start(self.model, self.upper)
            model = self._fit(name, self.temporal_clips, "video", start, teacher=self.model("video-upper"))
        elif name == "middle-frame":  # clip QA, causal, from the base model, one frame per clip
            model = self._fit(name, self.middle_clips(), "causal", self.upper)
        elif name == "video-upper":  # clip QA, causal, from the base model, on its own clips if given
            model = self._fit(name, self.upper_clips, "causal", self.upper)
        else:  # avgpool: clip QA, causal, from the base model
            model = self._fit(name, self.clips, "causal", self.upper)
        save_checkpoint(model, model.cfg, folder, {"model_key": key, "stage": name, "steps": self.steps_of(name),
                                                   "train_s": round(time.perf_counter() - t0, 1)})
        self._models[name] = model
        return model

    def middle_clips(self):
        """The loaded clip data with only each clip's middle frame (clips of one frame); the
        texts are shared, not reloaded, and features are computed afresh for the one frame."""
        from dataclasses import replace

        from vocolab.data.module import VoCoDataModule

        data = VoCoDataModule(self.cfg, kind="clips", turns=self.cfg.train.turns, progress=self.progress,
                              tokenizer=self.tokenizer)
        data.splits = {name: replace(split, images=split.images[:, self.middle : self.middle + 1], features=None,
                                     features_of=None)
                       for name, split in self.clips.splits.items()}
        return data

    def _fit(self, name: str, data, mask: str, init, teacher=None):
        from vocolab.training.recipe import fine_tune, stage_module

        cfg = self.cell_cfg(name)
        seed_everything(self.cfg.seed, verbose=False)
        steps = self.steps_of(name)
        module = stage_module(cfg, name, mask, steps, teacher, tokenizer=self.tokenizer)
        return fine_tune(module, data, cfg, self.runs / "temporal", name, steps, init=init,
                         progress=self.progress)

    # -- runs -----------------------------------------------------------------------------------
    def _on_device(self, model):
        from vocolab.core.runtime import device

        return model.to(device()).eval()

    def run_cell(self, name: str) -> dict:
        t0, v = time.perf_counter(), self.cfg.data.image_tokens
        clips, extra = self.heldout.images, {}
        if name == "lower":
            model, mask, k, tokens, method = self.model("video-upper"), "video", self.k, self.k, "voco"
        elif name == "middle-frame":
            model, mask, k, tokens, method = self.model(name), "causal", self.cfg.voco.tokens, v, "full"
            clips, extra = clips[:, self.middle : self.middle + 1], {"frame": self.middle}
        else:
            model = self.model(name)
            mask = {"voco-image": "video", "temporal": "video"}.get(name, "causal")
            k = {"avgpool": 0, "video-upper": self.cfg.voco.tokens}.get(name, self.k)
            tokens = v if name == "video-upper" else self.k
            method = {"avgpool": "avgpool", "video-upper": "full"}.get(name, "voco")
        run = clip_run(self._on_device(model), self.tokenizer, clips, self.qs, self.families, name=name,
                       method=method, mask=mask, k=k, tokens=tokens, curve=name != "middle-frame",
                       progress=self.progress) | extra
        model.cpu()
        # cached per frame: VoCo K tokens; avgpool K tokens; full V image tokens + their VoCo slots
        full = name in ("video-upper", "middle-frame")
        run["cost"] = frame_costs(self.cfg, tokens + (k if full else 0), clips.shape[1])
        run["train_steps"] = 0 if name == "lower" else self.steps_of(name)
        run["video_trained"] = name != "voco-image"
        run["wall_s"] = round(time.perf_counter() - t0, 1)
        return run

    def references(self) -> tuple[list[dict], dict]:
        """Blind and the symbolic best single frame (no model to train)."""
        from vocolab.evaluation.heldout import blind_run

        blind = blind_run(self.clips.splits["train"], self.qs, self.families) | {"frames": 0}
        single, detail = self.single_frame()
        return [blind, single], detail

    def single_frame(self) -> tuple[dict, dict]:
        """The symbolic answerer that sees the full state of one frame, at its best frame."""
        from vocolab.data.scenes import QA
        from vocolab.evaluation.baselines import best_single_frame

        def pairs(split: str) -> list[list[tuple]]:
            return [[(clip, QA(*f)) for f in zip(row["question"], row["answer"], row["family"], row["template"])]
                    for clip, row in self.symbolic_clips(split)]

        train = [p for clip in pairs("train") for p in clip]
        held = pairs("heldout")
        heldout = [held[int(i)][j] for i, j in zip(self.qs.item, self._question_index())]
        if [qa.question for _, qa in heldout] != self.qs.questions:
            raise RuntimeError("temporal: the symbolic clips do not match the held-out split")
        best = best_single_frame(self.cfg.data, train, heldout)
        frame = best["best_overall"]["frame"]
        chosen = best["per_frame"][frame]
        run = {"name": "best-single-frame", "method": "symbolic", "tokens": 0, "frames": 1, "frame": frame,
               "accuracy": chosen["accuracy"], "per_family": chosen["per_family"]}
        detail = {"per_frame": {str(t): s["accuracy"] for t, s in best["per_frame"].items()},
                  "best_per_family": best["best_per_family"]}
        return run, detail

    def symbolic_clips(self, split: str) -> list[tuple]:
        """(Clip, row) per clip of a split, regenerated without rendering: the symbolic state
        behind the pixels, for the references that reason over it."""
        from vocolab.data.clips import Clip
        from vocolab.data.storage import iter_rows

        return [(Clip.from_json(row["objects"]), row)
                for row in iter_rows(self.cfg.data, "clips", split, self.sizes[split], render=False)]

    def frame_questions(self):
        """Scene-family questions about each held-out clip's middle frame (`evaluation.clips.frame_questions`)."""
        from vocolab.evaluation.clips import frame_questions

        return frame_questions(self.cfg, "heldout", self.sizes["heldout"], self.middle, self.cfg.seed)

    def frame_perception(self) -> dict:
        """The shared scene model on held-out scenes and clips' middle frames (`evaluation.clips`)."""
        from vocolab.evaluation.clips import scene_perception

        out = scene_perception(self._on_device(self.upper), self.tokenizer, self.scenes.splits["heldout"],
                               self.heldout.images[:, self.middle], self.frame_questions(), self.cfg.voco.tokens,
                               self.progress)
        self.upper.cpu()
        return out | {"frame": self.middle}

    def _question_index(self) -> list[int]:
        """Each flattened question's index within its clip (`Questions.of` order)."""
        out, seen = [], {}
        for i in self.qs.item.tolist():
            out.append(seen.get(i, 0))
            seen[i] = out[-1] + 1
        return out

    def streaming_example(self, item: int = 0) -> dict | None:
        """One clip streamed through the temporal model: the cache and the answer after each
        frame (None when the temporal model is neither in memory nor saved)."""
        from vocolab.inference.answering import answer
        from vocolab.inference.compression import compress_frame

        model = self.model("temporal", train=False)
        if model is None:
            return None
        model.cpu()
        tok = self.tokenizer
        question, gold = self.heldout.questions[item][0], self.heldout.answers[item][0]
        q_ids = [tok(question, add_special_tokens=False)["input_ids"]]
        pixels = torch.from_numpy(self.heldout.images[item : item + 1])
        cache, steps = None, []
        for t in range(self.frames):
            cache = compress_frame(model, cache, pixels[:, t], t, self.k)
            said = tok.decode(answer(model, cache, q_ids, 3)[0], skip_special_tokens=True)
            steps.append({"frames": t + 1, "cache_tokens": cache.tokens, "cache_bytes": cache.nbytes,
                          "answer": said})
        return {"clip": item, "question": question, "gold": gold, "steps": steps}


def run_temporal_study(preset_name: str = "nano", out: str | Path = "figures/temporal", *, seed: int = 0,
                       k: int = K, steps: int | None = None, limit: int | None = None,
                       train_clips: int | None = None, overrides: dict | None = None, command: str = "vocolab temporal",
                       progress: bool = True, off_lattice_steps: int = 0,
                       settings: CellSettings | None = None) -> dict:
    """Train (or resume) every cell, evaluate on held-out clips; write results.json, table.md
    and the figures (accuracy_per_family.png, accuracy_vs_frames.png, streaming.png) to `out`.
    `train_clips` draws more training clips than `data.train_clips` without changing the config,
    so the shared scene model is the one the other studies use (generation is cheap). With
    `off_lattice_steps`, every cell starts from that scene model tuned so many steps on off-lattice
    scenes (`studies.off_lattice`); the held-out clips stay the same. `settings` give the temporal cell
    (distilled from video-upper) and video-upper their own training (`studies.temporal_settings`)."""
    from vocolab.evaluation.heldout import add_retention

    start = time.perf_counter()
    cfg = study_config(preset_name, seed, overrides, QUICK)
    steps = cell_steps(steps)
    check_steps(off_lattice_steps)
    out = Path(out)
    study = TemporalStudy(cfg, runs_dir(cfg), k=k, steps=steps, limit=limit, progress=progress,
                          train_clips=train_clips, off_lattice_steps=off_lattice_steps,
                          settings=settings or CellSettings())
    refs, single_detail = study.references()
    perception = study.frame_perception()
    ran: list[str] = []
    done, failed = run_cells(((name, study.cell_key(name), lambda name=name: study.run_cell(name))
                              for name in TRAINING_ORDER), out / "cells", desc="temporal", progress=progress, ran=ran)
    runs = sorted(done, key=lambda r: CELLS.index(r["name"])) + refs
    names = {r["name"] for r in runs}
    if {"video-upper", "lower"} <= names:
        runs = add_retention(runs, upper="video-upper", lower="lower")
    example = study.streaming_example() if "temporal" in names else None
    details = {"k": k, "steps": steps, "temporal_steps": study.temporal_steps, "clips": study.sizes,
               "upper_steps": study.upper_steps, "upper_clips": study.upper_sizes["train"],
               "off_lattice_steps": off_lattice_steps, **study.settings.record(),
               "middle_frame": study.middle, "failed": failed,
               "upper": "video-upper", "lower": "lower", "single_frame": single_detail,
               "frame_perception": perception, "example": example,
               "cells_wall_s": round(sum(r.get("wall_s", 0) for r in done), 1),
               "note": "retention against video-upper (upper) and lower = video-upper under the video mask "
                       "with K VoCo tokens per frame; cache bytes are fp32 K/V of every layer; wall_s of this "
                       "invocation, cells_wall_s sums every cell's own time including resumed ones"}
    eval_info = {"split": "heldout", "kind": "clips", "examples": len(study.qs), "families": list(study.families),
                 "frames": study.frames}
    frames = study.heldout.images[example["clip"]] if example else None
    return finish("temporal", out, command, start, cfg, eval_info, runs, details,
                  partial(write_temporal_outputs, example_frames=frames), ran=ran, failed=failed,
                  base=study.runs)


__all__ = ["CELLS", "K", "QUICK_CLIPS", "CellSettings", "TemporalStudy", "check_settings", "frame_costs",
           "run_temporal_study"]
