"""`vocolab sweep`: every compression method at every token count, on one code path.

    base    clip -> pretrain -> upper (trained once; the upper bound, and the model
            every training-free method runs on and every trained method starts from)
    cells   (method, K) for K in {1, 2, 4, ..., V/2}:
            trained methods (avgpool, qformer, perceiver, quecc) fine-tune the
            upper-bound model with the same data, seed, steps and schedule, one model
            per K; VoCo trains ONE model whose batches each draw K from the grid's Ks
            (`Sweep.voco_model`: the recipe's voco stage, `train.voco_objective`), for
            `steps` x (number of Ks) steps, the compute of one model per K, and every
            voco cell scores it at its K;
            training-free ones (random, uniform, fastv, prumerge) are evaluated on it.
            K = V is the upper bound itself for every method.

Fairness details: a query-conditioned method (QueCC) cannot put all of an image's
questions in one training sequence (its tokens depend on the question), so it
trains on one question per sequence with a batch `questions_per_scene` times
larger: the same answers per step. PruMerge picks its own K per image; its cell
reports the measured mean.

Resumable: each finished cell is a JSON file under `out/cells/`, keyed by the
settings and the base model it was made with; a rerun skips those, retries failed
cells (`*.failed.json`) and goes on past a cell that fails again. The shared VoCo
model is checkpointed under the runs folder (`voco-model`), keyed the same way.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

from lightning import seed_everything

from vocolab.core.config import Config
from vocolab.reporting.sweep import write_sweep_outputs
from vocolab.studies.cells import key_of, run_cells
from vocolab.studies.common import QUICK, Study, cell_steps, finish, study_config

TRAINED = ("voco", "avgpool", "qformer", "perceiver", "quecc")
TRAINING_FREE = ("random", "uniform", "fastv", "prumerge")
METHODS = TRAINED + TRAINING_FREE
KS = (1, 2, 4, 8, 16, 32)
FASTV_LAYER = 2


@dataclass(frozen=True)
class Cell:
    """One (method, K) point of the grid; PruMerge picks its own K."""

    method: str
    k: int

    @property
    def name(self) -> str:
        return self.method if self.method == "prumerge" else f"{self.method}-k{self.k}"


def plan(methods=METHODS, ks=KS, image_tokens: int = 64) -> list[Cell]:
    """Cells in run order (grouped by method, so cached features are reused)."""
    from vocolab.zoo.registry import method_info

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
    """The cell code of the sweep (configure, train or wrap, evaluate, cost) over a `Study`;
    the scaling grid runs it once per LLM size."""

    def __init__(self, study: Study, voco_ks: tuple[int, ...] = KS):
        self.study, self.voco_ks = study, tuple(voco_ks)
        self._voco, self.voco_seconds = None, None

    @property
    def voco_training(self) -> dict:
        """The shared VoCo model's training: `steps` per K, each batch at a K drawn from these."""
        return {"steps": self.study.steps * len(self.voco_ks), "voco_ks": list(self.voco_ks)}

    def training(self, cell: Cell) -> dict:
        """What a cell's training is beyond config and base model (its cell key)."""
        return self.voco_training if cell.method == "voco" else {"steps": self.study.steps}

    def cell_key(self, cell: Cell) -> str:
        s = self.study
        return key_of({"cell": cell.name, "cfg": s.cfg.to_dict(), **self.training(cell), "base": s.base_id,
                       "questions": len(s.qs)})

    def run_cell(self, cell: Cell) -> dict:
        from vocolab.zoo.registry import method_info

        start = time.perf_counter()
        info = method_info(cell.method)
        if info.trainable:
            model, mask, voco_k = self._train(cell, info)
        else:
            model, mask, voco_k = self._training_free(cell)
        run = self._evaluate(cell, model, mask, voco_k)
        run["cost"] = self._costs(cell, info, model, voco_k)
        run["train_steps"] = self.training(cell)["steps"] if info.trainable else 0
        if cell.method == "voco":  # one model for every K: its training is on every voco cell's record
            run["shared_model"] = {"trained_ks": list(self.voco_ks), "train_s": self.voco_seconds}
        run["trainable"], run["needs_query"], run["needs_attention"] = (
            info.trainable, info.needs_query, info.needs_attention)
        run["wall_s"] = round(time.perf_counter() - start, 1)
        return run

    def _cell_cfg(self, cell: Cell) -> Config:
        cfg = self.study.cfg
        if cell.method in ("fastv", "prumerge"):
            return cfg
        return cfg.override(**{"compress.method": cell.method, "compress.tokens": cell.k, "voco.tokens": 0})

    def _train(self, cell: Cell, info):
        from vocolab.training.recipe import fine_tune, stage_module

        if cell.method == "voco":
            return self.voco_model(), "voco", cell.k
        s, cfg = self.study, self._cell_cfg(cell)
        turns = cfg.train.turns and not info.needs_query
        if cfg.train.turns and not turns:  # same answers per step, one question per sequence
            cfg = cfg.override(**{"train.batch_size": cfg.train.batch_size * cfg.data.questions_per_scene})
        seed_everything(s.cfg.seed, verbose=False)  # the zoo's compressors learn from the answers alone
        module = stage_module(cfg, cell.name, "causal", s.steps, tokenizer=s.data.tokenizer)
        s.data.turns = turns
        model = fine_tune(module, s.data, cfg, s.runs / "cells", cell.name, s.steps, init=s.upper,
                          progress=s.progress)
        s.data.turns = s.cfg.train.turns
        return model, "causal", cfg.voco.tokens

    def voco_model(self):
        """The one VoCo model every voco cell is scored on: the recipe's voco stage (its
        `train.voco_objective` against the frozen upper bound) with each batch at a K drawn
        from `voco_ks`, trained once and kept under `runs/voco-model`.

        Why one model: trained one K at a time (400 steps each), retention was flat in K (0.48
        at K = 1 to 0.61 at K = 32, nano seed 0); one stage drawing K per batch kept 0.75 at
        K = 1 rising to 0.99 at K = 16 on validation (RESULTS.md), as the paper's does."""
        from vocolab.models.checkpoint import load_if_saved_for, save_checkpoint
        from vocolab.training.recipe import fine_tune, stage_module

        if self._voco is not None:
            return self._voco
        s, training = self.study, self.voco_training
        folder = s.runs / "voco-model"
        key = key_of({"cfg": s.cfg.to_dict(), **training, "base": s.base_id})
        saved = load_if_saved_for(folder, sweep_key=key)
        if saved is not None:
            self._voco, self.voco_seconds = saved[0].eval(), saved[2].get("train_s")
            return self._voco
        start = time.perf_counter()
        seed_everything(s.cfg.seed, verbose=False)
        module = stage_module(s.cfg, "voco", "voco", training["steps"], s.upper, tokenizer=s.data.tokenizer)
        model = fine_tune(module, s.data, s.cfg, s.runs / "cells", "voco", training["steps"], init=s.upper,
                          k=self.voco_ks, progress=s.progress)
        s.upper.cpu()  # the teacher may have followed the student to an accelerator
        self.voco_seconds = round(time.perf_counter() - start, 1)
        save_checkpoint(model, s.cfg, folder, {"sweep_key": key, "train_s": self.voco_seconds})
        self._voco = model
        return model

    def _training_free(self, cell: Cell):
        from vocolab.models.vlm import VoCoVLM

        upper, voco_k = self.study.upper, self.study.cfg.voco.tokens
        if cell.method == "fastv":
            from vocolab.zoo.fastv import FastVModel

            return FastVModel(upper, keep=cell.k, layer=FASTV_LAYER), "causal", voco_k
        if cell.method == "prumerge":
            return upper, "causal", voco_k
        model = VoCoVLM(self._cell_cfg(cell), upper.special, upper.vocab_size)
        model.load_backbone(upper.state_dict())
        return model.eval(), "causal", 0

    def _evaluate(self, cell: Cell, model, mask: str, voco_k: int) -> dict:
        from vocolab.evaluation.heldout import model_run, score

        s = self.study
        heldout, tok = s.data.splits["heldout"], s.data.tokenizer
        if cell.method == "prumerge":
            from vocolab.zoo.adaptive import predict_adaptive

            preds, counts = predict_adaptive(model, tok, heldout.images, s.qs, k=voco_k, progress=s.progress)
            run = {"name": cell.name, "method": cell.method, "tokens": round(float(counts.mean()), 2),
                   "mask": mask, "tokens_min": int(counts.min()), "tokens_max": int(counts.max())}
            return run | score(preds, s.qs, s.families)
        k = cell.k if mask == "voco" else voco_k
        run = model_run(model, tok, heldout, s.qs, s.families, name=cell.name, method=cell.method, mask=mask, k=k,
                        progress=s.progress)
        run["tokens"] = cell.k
        return run

    def _costs(self, cell: Cell, info, model, voco_k: int) -> dict:
        from vocolab.zoo.costs import method_costs

        pixels, features, q_ids = self.study.probe(model)
        tokens, extra, placed = cell.k, 0, contextlib.nullcontext()
        if cell.method == "prumerge":
            from vocolab.inference.flops import measured_flops
            from vocolab.zoo.adaptive import prumerge_parts

            compressor, features, extras = prumerge_parts(self.study.upper, pixels)
            extra = measured_flops(lambda: compressor(features, extras=extras))  # the vision side is shared
            features = compressor(features, extras=extras)[0][None]
            tokens = features.shape[1]
            placed = model.projector.placed_at(compressor.kept_patches(extras)[0])
        with placed:
            cost = method_costs(model, cell.method, features, q_ids, tokens=tokens, voco_tokens=voco_k,
                                fastv_layer=FASTV_LAYER, needs_query=info.needs_query, extra_flops=extra)
        if cell.method == "fastv":  # the paper's estimate of the prefill share saved, for comparison
            from vocolab.zoo.fastv import fastv_paper_ratio

            cfg, n = self.study.cfg, cost["sequence_tokens"]
            paper = fastv_paper_ratio(cfg, n, n - (cfg.data.image_tokens - cell.k), FASTV_LAYER)
            cost["paper_prefill_reduction"] = round(paper.reduction, 4)
        return cost

    def bounds(self) -> list[dict]:
        """Upper (with the costs of answering from all V tokens), lower and blind."""
        from vocolab.zoo.costs import method_costs

        s = self.study
        upper, lower, blind = s.bounds()
        _, features, q_ids = s.probe()
        upper["cost"] = method_costs(s.upper, "full", features, q_ids, tokens=s.cfg.data.image_tokens,
                                     voco_tokens=s.cfg.voco.tokens)
        return [upper, lower, blind]


def run_sweep(preset_name: str = "nano", out: str | Path = "figures/sweep", *, seed: int = 0,
              methods=METHODS, ks=KS, steps: int | None = None, limit: int | None = None,
              overrides: dict | None = None, command: str = "vocolab sweep", progress: bool = True) -> dict:
    """Run (or resume) the sweep and write results.json, the figures and table.md to `out`."""
    from vocolab.evaluation.heldout import add_retention

    start = time.perf_counter()
    cfg = study_config(preset_name, seed, overrides, QUICK)
    steps = cell_steps(steps)
    cells = plan(methods, ks, cfg.data.image_tokens)
    out = Path(out)
    sweep = Sweep(Study.on_scenes(cfg, steps, limit, progress), voco_ks=ks)
    bounds = sweep.bounds()
    ran: list[str] = []
    done, failed = run_cells(((cell.name, sweep.cell_key(cell), lambda cell=cell: sweep.run_cell(cell))
                              for cell in cells), out / "cells", desc="sweep", progress=progress, ran=ran)
    details = {"methods": list(methods), "ks": list(ks), "steps": steps, "fastv_layer": FASTV_LAYER,
               "failed": failed, "cells_wall_s": round(sum(r.get("wall_s", 0) for r in done), 1),
               "note": "provenance.wall_s is this invocation's; `invocations` lists every invocation that "
                       "made this folder's cells; cells_wall_s sums every cell's own time"}
    if "voco" in methods:  # one model scored at every K (`Sweep.voco_model`)
        details["voco_model"] = sweep.voco_training | {"train_s": sweep.voco_seconds}
    eval_info = {"split": "heldout", "examples": len(sweep.study.qs), "families": list(sweep.study.families)}
    return finish("sweep", out, command, start, cfg, eval_info, add_retention(bounds + done), details,
                  write_sweep_outputs, ran=ran, failed=failed, base=sweep.study.runs)


__all__ = ["Cell", "FASTV_LAYER", "KS", "METHODS", "Sweep", "TRAINED", "TRAINING_FREE", "plan", "run_sweep"]
