"""`vocolab sweep`: every compression method at every token count, on one code path.

    base    clip -> pretrain -> upper (trained once; the upper bound, and the model
            every training-free method runs on and every trained method starts from)
    cells   (method, K) for K in {1, 2, 4, ..., V/2}:
            trained methods (voco, avgpool, qformer, perceiver, quecc) fine-tune the
            upper-bound model with the same data, seed, steps and schedule;
            training-free ones (random, uniform, fastv, prumerge) are evaluated on it.
            K = V is the upper bound itself for every method.

Fairness details: a query-conditioned method (QueCC) cannot put all of an image's
questions in one training sequence (its tokens depend on the question), so it
trains on one question per sequence with a batch `questions_per_scene` times
larger: the same answers per step. PruMerge picks its own K per image; its cell
reports the measured mean.

Resumable: each finished cell is a JSON file under `out/cells/`, keyed by the
settings and the base model it was made with; a rerun skips those, retries failed
cells (`*.failed.json`) and goes on past a cell that fails again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .cells import key_of, log_invocation, model_id, run_cells
from .config import Config, quick_mode, study_config
from .outputs import write_json

TRAINED = ("voco", "avgpool", "qformer", "perceiver", "quecc")
TRAINING_FREE = ("random", "uniform", "fastv", "prumerge")
METHODS = TRAINED + TRAINING_FREE
KS = (1, 2, 4, 8, 16, 32)
FASTV_LAYER = 2
SWEEP_STEPS = 400  # fine-tuning steps of every trained cell (nano)
QUICK = {"data.train_scenes": 200, "data.heldout_scenes": 40, "train.clip_steps": 5,
         "train.pretrain_steps": 5, "train.instruct_steps": 5}


@dataclass(frozen=True)
class Cell:
    method: str
    k: int

    @property
    def name(self) -> str:
        return self.method if self.method == "prumerge" else f"{self.method}-k{self.k}"


def plan(methods=METHODS, ks=KS, image_tokens: int = 64) -> list[Cell]:
    """Cells in run order (grouped by method, so cached features are reused)."""
    from .zoo import method_info

    cells = []
    for method in methods:
        method_info(method)  # unknown names fail before anything runs
        if method == "prumerge":
            cells.append(Cell(method, image_tokens))
            continue
        for k in ks:
            if not 1 <= k < image_tokens:
                raise ValueError(f"sweep: K={k} is outside 1..V-1 (V={image_tokens}; K=V is the upper bound)")
            cells.append(Cell(method, k))
    return cells


class Sweep:
    """State shared by the cells: config, data, the base model, held-out questions."""

    def __init__(self, cfg: Config, out: Path, runs: Path, steps: int, limit: int | None, progress: bool):
        from .data import FAMILIES
        from .data.module import VoCoDataModule
        from .evaluate import Questions

        self.cfg, self.out, self.runs, self.steps, self.progress = cfg, out, runs, steps, progress
        self.families = FAMILIES
        self.data = VoCoDataModule(cfg, turns=cfg.train.turns, progress=progress)
        self.data.setup()
        self.qs = Questions.of(self.data.splits["heldout"], limit)
        self.upper = base_model(cfg, runs, self.data, progress)
        self.base_id = model_id(self.upper)

    # -- one cell -------------------------------------------------------------------------------
    def cell_key(self, cell: Cell) -> str:
        return key_of({"cell": cell.name, "cfg": self.cfg.to_dict(), "steps": self.steps, "base": self.base_id,
                     "questions": len(self.qs)})

    def run_cell(self, cell: Cell) -> dict:
        from .zoo import method_info

        start = time.perf_counter()
        info = method_info(cell.method)
        if info.trainable:
            model, mask, voco_k = self._train(cell, info)
        else:
            model, mask, voco_k = self._training_free(cell)
        run = self._evaluate(cell, model, mask, voco_k)
        run["cost"] = self._costs(cell, info, model, voco_k, run)
        run["train_steps"] = self.steps if info.trainable else 0
        run["trainable"], run["needs_query"], run["needs_attention"] = (
            info.trainable, info.needs_query, info.needs_attention)
        run["wall_s"] = round(time.perf_counter() - start, 1)
        return run

    def _cell_cfg(self, cell: Cell) -> Config:
        if cell.method == "voco":
            return self.cfg.override(**{"voco.tokens": cell.k})
        if cell.method in ("fastv", "prumerge"):
            return self.cfg
        return self.cfg.override(**{"compress.method": cell.method, "compress.tokens": cell.k,
                                    "voco.tokens": 0})

    def _train(self, cell: Cell, info):
        from .lit import VLMModule
        from .train import make_trainer

        cfg = self._cell_cfg(cell)
        turns = cfg.train.turns and not info.needs_query
        if cfg.train.turns and not turns:  # same answers per step, one question per sequence
            cfg = cfg.override(**{"train.batch_size": cfg.train.batch_size * cfg.data.questions_per_scene})
        mask = "voco" if cell.method == "voco" else "causal"
        torch.manual_seed(self.cfg.seed)
        module = VLMModule(cfg, mask=mask, stage=cell.name, steps=self.steps)
        module.model.load_backbone(self.upper.state_dict())
        self.data.turns = turns
        self.data.set_task("qa", voco_tokens=cfg.voco.tokens, image_slots=cfg.image_slots)
        self.data.batch_size = cfg.train.batch_size
        trainer = make_trainer(cfg, self.runs / "cells", cell.name, self.steps, progress=self.progress,
                               checkpoint=False, limit_val_batches=0)
        trainer.fit(module, datamodule=self.data)
        self.data.turns = self.cfg.train.turns
        return module.model.cpu().eval(), mask, cfg.voco.tokens

    def _training_free(self, cell: Cell):
        from .models import VoCoVLM

        if cell.method == "fastv":
            from .zoo.fastv import FastVModel

            return FastVModel(self.upper, keep=cell.k, layer=FASTV_LAYER), "causal", self.cfg.voco.tokens
        if cell.method == "prumerge":
            return self.upper, "causal", self.cfg.voco.tokens
        cfg = self._cell_cfg(cell)
        model = VoCoVLM(cfg, self.upper.special, self.upper.vocab_size)
        model.load_backbone(self.upper.state_dict())
        return model.eval(), "causal", 0

    def _evaluate(self, cell: Cell, model, mask: str, voco_k: int) -> dict:
        from .evaluate import model_run, score

        heldout, tok = self.data.splits["heldout"], self.data.tokenizer
        if cell.method == "prumerge":
            from .zoo.adaptive import predict_adaptive

            preds, counts = predict_adaptive(model, tok, heldout.images, self.qs, k=voco_k,
                                             progress=self.progress)
            run = {"name": cell.name, "method": cell.method, "tokens": round(float(counts.mean()), 2),
                   "mask": mask, "tokens_min": int(counts.min()), "tokens_max": int(counts.max())}
            return run | score(preds, self.qs, self.families)
        k = cell.k if mask == "voco" else voco_k
        run = model_run(model, tok, heldout, self.qs, self.families, name=cell.name, method=cell.method,
                        mask=mask, k=k, progress=self.progress)
        run["tokens"] = cell.k
        return run

    def _costs(self, cell: Cell, info, model, voco_k: int, run: dict) -> dict:
        from .zoo.costs import method_costs

        heldout, tok = self.data.splits["heldout"], self.data.tokenizer
        item = int(self.qs.item[0])
        q_ids = tok(self.qs.questions[0], add_special_tokens=False)["input_ids"]
        pixels = torch.from_numpy(heldout.images[item : item + 1])
        with torch.no_grad():
            features = model.encode_images(pixels)
        tokens, extra = cell.k, 0
        if cell.method == "prumerge":
            from .flops import measured_flops
            from .zoo.adaptive import prumerge_parts

            compressor, features, extras = prumerge_parts(self.upper, pixels)
            extra = measured_flops(lambda: compressor(features, extras=extras))  # the vision side is shared
            features = compressor(features, extras=extras)[0][None]
            tokens = features.shape[1]
        cost = method_costs(model, cell.method, features, q_ids, tokens=tokens, voco_tokens=voco_k,
                            fastv_layer=FASTV_LAYER, needs_query=info.needs_query, extra_flops=extra)
        if cell.method == "fastv":  # the paper's estimate of the prefill share saved, for comparison
            from .zoo.fastv import fastv_paper_ratio

            n = cost["sequence_tokens"]
            paper = fastv_paper_ratio(self.cfg, n, n - (self.cfg.data.image_tokens - cell.k), FASTV_LAYER)
            cost["paper_prefill_reduction"] = round(paper.reduction, 4)
        return cost

    # -- the bounds ---------------------------------------------------------------------------
    def bounds(self) -> list[dict]:
        from .evaluate import bound_runs
        from .zoo.costs import method_costs

        heldout, tok = self.data.splits["heldout"], self.data.tokenizer
        k = self.cfg.voco.tokens
        upper, lower, blind = bound_runs(self.upper, tok, self.data.splits["train"], heldout, self.qs,
                                         self.families, k_lower=1, progress=self.progress)
        q_ids = tok(self.qs.questions[0], add_special_tokens=False)["input_ids"]
        item = int(self.qs.item[0])
        with torch.no_grad():
            features = self.upper.encode_images(torch.from_numpy(heldout.images[item : item + 1]))
        upper["cost"] = method_costs(self.upper, "full", features, q_ids, tokens=self.cfg.data.image_tokens,
                                     voco_tokens=k)
        return [upper, lower, blind]


def base_model(cfg: Config, runs: Path, data, progress: bool = True):
    """The upper-bound model every study starts from (clip -> pretrain -> upper), trained
    once per config and seed and kept as a checkpoint under `runs/upper-model`."""
    from .checkpoint import load_checkpoint, save_checkpoint
    from .pipeline import run_recipe

    folder = runs / "upper-model"
    meta_key = key_of({"cfg": cfg.to_dict()})
    if (folder / "meta.json").exists():
        model, _, meta = load_checkpoint(folder)
        if meta.get("sweep_key") == meta_key:
            print(f"reusing the base (upper-bound) model in {folder}")
            return model.eval()
    print("training the base model (clip -> pretrain -> upper)")
    trained = run_recipe(cfg, runs / "base", data=data, progress=progress, stages=("clip", "pretrain", "upper"))
    model = trained.upper.model.cpu().eval()
    save_checkpoint(model, cfg, folder, {"sweep_key": meta_key, "stage_seconds": trained.seconds})
    return model


def runs_dir(cfg: Config) -> Path:
    """Where the shared base model and training logs of the studies live (cache, not figures)."""
    from .data.storage import cache_root

    return cache_root() / "runs" / f"sweep-{cfg.preset}-seed{cfg.seed}{'-quick' if quick_mode() else ''}"


def run_sweep(preset_name: str = "nano", out: str | Path = "figures/sweep", *, seed: int = 0,
              methods=METHODS, ks=KS, steps: int | None = None, limit: int | None = None,
              overrides: dict | None = None, command: str = "vocolab sweep", progress: bool = True) -> dict:
    """Run (or resume) the sweep and write results.json, the figures and table.md to `out`."""
    from .report import results
    from .runtime import provenance

    start = time.perf_counter()
    cfg = study_config(preset_name, seed, overrides, QUICK)
    steps = steps if steps is not None else (5 if quick_mode() else SWEEP_STEPS)
    cells = plan(methods, ks, cfg.data.image_tokens)
    out = Path(out)
    sweep = Sweep(cfg, out, runs_dir(cfg), steps, limit, progress)
    bounds = sweep.bounds()
    ran: list[str] = []
    done, failed = run_cells(((cell.name, sweep.cell_key(cell), lambda cell=cell: sweep.run_cell(cell))
                              for cell in cells), out / "cells", desc="sweep", progress=progress, ran=ran)
    from .evaluate import add_retention

    runs_all = add_retention(bounds + done)
    cell_seconds = sum(r.get("wall_s", 0) for r in done)
    wall = time.perf_counter() - start
    history = log_invocation(out, command, wall, ran, failed)
    body = results(provenance(command, cfg.preset, seed, wall, out),
                   {"split": "heldout", "examples": len(sweep.qs), "families": list(sweep.families)},
                   runs_all, config=cfg.to_dict(), invocations=history,
                   sweep={"methods": list(methods), "ks": list(ks), "steps": steps, "fastv_layer": FASTV_LAYER,
                          "failed": failed, "cells_wall_s": round(cell_seconds, 1),
                          "note": "provenance.wall_s is this invocation's; `invocations` lists every "
                                  "invocation that made this folder's cells; cells_wall_s sums every cell's "
                                  "own time"})
    write_outputs(body, out)
    return body


def write_outputs(body: dict, out: Path) -> None:
    """results.json, table.md and the three figures, all from the results body."""
    from .plotting import save_figure
    from .sweep_report import (plot_accuracy_vs_flops, plot_family_heatmap, plot_retention_vs_tokens,
                               sweep_markdown)

    write_json(out / "results.json", body)
    (out / "table.md").write_text(sweep_markdown(body) + "\n")
    save_figure(plot_retention_vs_tokens(body), out / "retention_vs_tokens.png")
    save_figure(plot_accuracy_vs_flops(body), out / "accuracy_vs_flops.png")
    save_figure(plot_family_heatmap(body), out / "family_heatmap.png")
    print(sweep_markdown(body))


__all__ = ["KS", "METHODS", "TRAINED", "TRAINING_FREE", "Cell", "base_model", "plan", "run_sweep", "runs_dir",
           "study_config", "write_outputs"]
