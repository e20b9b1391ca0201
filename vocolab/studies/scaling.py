"""`vocolab scaling`: is it better to spend inference FLOPs on visual tokens or on the LLM?

The question of Li et al. 2024, "Inference Optimal VLMs Need Only One Visual Token but
Larger Models" (arXiv 2411.03312), asked at nano scale. Their answer, for visual
reasoning: error Y(N, V) = A N^-alpha V^-beta + D with alpha ~ 0.077 >> beta ~ 0.015,
so at a fixed budget of 2 N (Q + V) FLOPs per question the best buy is the largest LLM
with the fewest visual tokens, one token when the text is cached (Q -> 0).

The grid (same data, seed, schedule and learning rate for every cell):

    clip        ONE contrastive CLIP stage, shared: the vision tower does not depend on
                the LLM, so every size sees the same frozen features
    per size    pretrain -> upper (causal) on top of that CLIP: the size's upper-bound
                model, evaluated as is for the K = V point (all V patch tokens)
    cells       (size, method, K) for K in `ks` (< V): VoCo (K VoCo tokens, voco mask;
                one model per size drawing K per batch, `steps` x (number of Ks) steps)
                and QueCC (the zoo's query-conditioned compressor, for comparison, one
                `steps`-step model per K), fine-tuned from the size's upper-bound model
                by the sweep's own cell code (`studies.sweep.Sweep`)

N is the LLM's parameter count, `VoCoVLM.parameter_report()["llm"]`: every LLM weight,
the (tied) token embedding included (the paper's model sizes include embeddings too;
the non-embedding count is stored beside it: with 78 tokens the embedding is 1-5% of
N). V is the number of visual tokens the text sees (K, or all V patches for the upper
bound). Y = 1 - held-out exact match. The law is fitted per method (its K < V cells plus
every size's K = V upper bound) with `evaluation.scaling_law` (bounded: the paper notes an
unbounded fit diverges), with a bootstrap over grid cells and two held-out checks (the
largest LLM's cells, i.e. extrapolation in N; and a seeded random 20% of the cells).
FLOPs per question are the paper's 2 N (Q + V), Q = the mean held-out question length
in tokens (and Q = 0, cached text), with vocolab's measured FLOPs (`zoo.costs`) beside.

Step budget (nano, 2-core CPU, fp32, batch 32). An instruct step costs ~0.2 s at hidden
128 / 4 layers (N = 0.86M; the nano quickstart: pretrain 0.19, upper 0.23, voco 0.21 s
per step); model it as t(N) ~ 0.03 s + 0.18 s * N / 0.86M. With the sizes below
(N = 0.11M, 0.37M, 0.86M, 1.93M, a 17x span) one step of every size costs
0.055 + 0.107 + 0.21 + 0.43 ~ 0.80 s. Each size trains pretrain 400 + upper 2200 (the
preset's) + one VoCo model of 4 x 200 + 4 QueCC x 200 (`SCALING_STEPS`) = 4200 steps: 4200 x 0.80 ~
3400 s, and the VoCo cells' distillation adds the frozen teacher's forward. Measured on the
current recipe (RESULTS.md): about 98 min from scratch, 3.5 of them beside another process, so
about 95 min on an idle machine: over the 90-minute target (h192-l4 alone: ~1,500 s of stages).
`steps` (cell steps) and `--set train.pretrain_steps=... train.instruct_steps=...`
move the budget linearly; `limit` caps the evaluation. Every cell records its own
`wall_s` and every size its stage seconds, so the real cost is in the results file.

Resumable: the shared CLIP and each size's upper-bound model are checkpointed under the
study's runs folder (keyed by their settings), every finished cell is a JSON file under
`out/cells/` (keyed by settings, base model and questions); a rerun skips both.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from vocolab.core.config import Config
from vocolab.core.runtime import quick_mode
from vocolab.evaluation.scaling_analysis import N_BOOT, NOTE_N, analyse
from vocolab.evaluation.scaling_budget import inference_flops
from vocolab.reporting.scaling import write_scaling_outputs
from vocolab.studies.cells import key_of, model_id, run_cells
from vocolab.studies.common import BASE_FOLDER, QUICK, Study, finish, runs_dir, study_config
from vocolab.studies.sweep import TRAINED, Cell, Sweep

METHODS = ("voco", "quecc")

KS = (1, 2, 4, 16)  # plus K = V (64 at nano): the upper-bound model itself

QUICK_KS = (1, 4)

SCALING_STEPS = 200  # fine-tuning steps of every (size, method, K) cell at nano


@dataclass(frozen=True)
class LLMSize:
    """One LLM size: overrides of the preset's `llm` section. The initial weights' std is
    ~1/sqrt(hidden), scaled so that hidden 128 gets the nano preset's 0.08."""

    hidden: int
    layers: int
    heads: int
    intermediate: int

    @property
    def name(self) -> str:
        return f"h{self.hidden}-l{self.layers}"

    @property
    def init_std(self) -> float:
        return round(0.08 * math.sqrt(128 / self.hidden), 4)

    def overrides(self) -> dict:
        return {"llm.hidden_size": self.hidden, "llm.layers": self.layers, "llm.heads": self.heads,
                "llm.kv_heads": self.heads, "llm.intermediate_size": self.intermediate,
                "llm.init_std": self.init_std}


#: nano grid: N = 0.11M, 0.37M, 0.86M (the nano preset's LLM), 1.93M (17x); head size 32.
SIZES = (LLMSize(64, 2, 2, 192), LLMSize(96, 3, 3, 288), LLMSize(128, 4, 4, 384), LLMSize(192, 4, 6, 576))

#: quick mode (notebooks, smoke runs): 13k, 50k, 112k LLM parameters.
QUICK_SIZES = (LLMSize(32, 1, 2, 64), LLMSize(48, 2, 2, 96), LLMSize(64, 2, 2, 192))


def as_size(size) -> LLMSize:
    """An `LLMSize` from itself, a (hidden, layers, heads, intermediate) tuple or a mapping."""
    if isinstance(size, LLMSize):
        return size
    if isinstance(size, dict):
        return LLMSize(**size)
    return LLMSize(*size)


def plan(sizes, methods, ks, image_tokens: int) -> list[tuple[LLMSize, Cell | None]]:
    """Cells in run order: per size, its upper bound (None) then every (method, K)."""
    sizes = [as_size(s) for s in sizes]
    if not sizes:
        raise ValueError("scaling: no LLM sizes given")
    names = [s.name for s in sizes]
    if len(set(names)) != len(names):
        raise ValueError(f"scaling: LLM sizes must differ in hidden size or layers, got {names}")
    bad = [m for m in methods if m not in TRAINED]
    if bad:
        raise ValueError(f"scaling: unknown or untrained method(s) {bad}; choose from {TRAINED}")
    for k in ks:
        if not 1 <= k < image_tokens:
            raise ValueError(f"scaling: K={k} is outside 1..V-1 (V={image_tokens}; K=V is the upper bound)")
    return [(s, cell) for s in sizes for cell in [None] + [Cell(m, k) for m in methods for k in ks]]


class ScalingGrid:
    """State shared by the cells: config, data, questions, the shared CLIP, one upper-bound
    model per LLM size."""

    def __init__(self, cfg: Config, runs: Path, steps: int, limit: int | None, progress: bool,
                 ks: tuple[int, ...] = KS):
        from vocolab.data.module import VoCoDataModule
        from vocolab.data.scenes import FAMILIES
        from vocolab.evaluation.heldout import Questions

        self.cfg, self.runs, self.steps, self.progress, self.ks = cfg, runs, steps, progress, tuple(ks)
        self.families = FAMILIES
        self.data = VoCoDataModule(cfg, turns=cfg.train.turns, progress=progress)
        self.data.setup()
        self.qs = Questions.of(self.data.splits["heldout"], limit)
        from vocolab.data.vocab import words

        self.clip_key = key_of({"clip": cfg.to_dict(), "vocabulary": words(cfg.data)})
        self._clip = None
        self.uppers: dict[str, torch.nn.Module] = {}
        self.sweeps: dict[str, Sweep] = {}
        self.stage_seconds: dict[str, dict] = {}

    def size_cfg(self, size: LLMSize) -> Config:
        return self.cfg.override(**size.overrides())

    # -- the shared CLIP ------------------------------------------------------------------------
    def clip(self):
        """The contrastive CLIP stage, trained once and kept under `runs/clip.pt`."""
        from vocolab.training.modules import ClipModule
        from vocolab.training.recipe import clip_stage

        if self._clip is not None:
            return self._clip
        path = self.runs / "clip.pt"
        if path.exists():
            saved = torch.load(path, map_location="cpu", weights_only=True)
            if saved.get("key") == self.clip_key:
                module = ClipModule(self.cfg)
                module.clip.load_state_dict(saved["state"])
                print(f"reusing the shared CLIP stage in {path}")
                self._clip = module.eval()
                return self._clip
        print("training the shared CLIP stage")
        start = time.perf_counter()
        torch.manual_seed(self.cfg.seed)
        module = clip_stage(self.cfg, self.data, self.runs, self.progress).cpu().eval()
        self.runs.mkdir(parents=True, exist_ok=True)
        torch.save({"key": self.clip_key, "state": module.clip.state_dict(),
                    "seconds": round(time.perf_counter() - start, 1)}, path)
        self._clip = module
        return module

    # -- one upper-bound model per size -----------------------------------------------------------
    def upper(self, size: LLMSize):
        """pretrain -> upper on the shared CLIP for this size; checkpointed under `runs/<size>`."""
        from vocolab.models.checkpoint import load_if_saved_for, save_checkpoint
        from vocolab.training.recipe import vlm_stage

        if size.name in self.uppers:
            return self.uppers[size.name]
        cfg = self.size_cfg(size)
        folder = self.runs / size.name / BASE_FOLDER
        key = key_of({"cfg": cfg.to_dict(), "clip": self.clip_key})
        saved = load_if_saved_for(folder, scaling_key=key)
        if saved is not None:
            model, _, meta = saved
            print(f"reusing the {size.name} upper-bound model in {folder}")
            self.uppers[size.name], self.stage_seconds[size.name] = model.eval(), meta.get("stage_seconds", {})
            return self.uppers[size.name]
        print(f"training the {size.name} upper-bound model (pretrain -> upper)")
        clip, out, t, seconds = self.clip(), self.runs / size.name, cfg.train, {}
        torch.manual_seed(cfg.seed)
        start = time.perf_counter()
        pre = vlm_stage(cfg, self.data, out, "pretrain", task="caption", mask="causal", steps=t.pretrain_steps,
                        init=clip, progress=self.progress)
        seconds["pretrain"] = round(time.perf_counter() - start, 1)
        start = time.perf_counter()
        up = vlm_stage(cfg, self.data, out, "upper", task="qa", mask="causal", steps=t.instruct_steps, init=pre,
                       progress=self.progress)
        seconds["upper"] = round(time.perf_counter() - start, 1)
        model = up.model.cpu().eval()
        save_checkpoint(model, cfg, folder, {"scaling_key": key, "stage_seconds": seconds})
        self.uppers[size.name], self.stage_seconds[size.name] = model, seconds
        return model

    def llm_params(self, size: LLMSize) -> dict:
        model = self.upper(size)
        n = int(model.parameter_report()["llm"])
        return {"llm_params": n, "llm_params_non_embedding": n - model.vocab_size * size.hidden}

    # -- cells ------------------------------------------------------------------------------------
    def cell_name(self, size: LLMSize, cell: Cell | None) -> str:
        return f"{size.name}-upper" if cell is None else f"{size.name}-{cell.name}"

    def cell_key(self, size: LLMSize, cell: Cell | None) -> str:
        upper = self.upper(size)
        training = {"steps": 0} if cell is None else self.sweep(size).training(cell)
        return key_of({"cell": self.cell_name(size, cell), "cfg": self.size_cfg(size).to_dict(), **training,
                       "base": model_id(upper), "questions": len(self.qs)})

    def run_cell(self, size: LLMSize, cell: Cell | None) -> dict:
        start = time.perf_counter()
        cfg, upper = self.size_cfg(size), self.upper(size)
        if cell is None:
            run = self._upper_run(cfg, upper) | {"train_steps": 0,
                                                 "stage_seconds": self.stage_seconds.get(size.name, {})}
        else:
            run = self.sweep(size).run_cell(cell)
        run |= {"name": self.cell_name(size, cell), "size": size.name, "llm": asdict(size), **self.llm_params(size),
                "wall_s": round(time.perf_counter() - start, 1)}
        return run

    def sweep(self, size: LLMSize) -> Sweep:
        """The sweep's cell code for one size, kept: its VoCo cells share one model."""
        if size.name not in self.sweeps:
            self.sweeps[size.name] = Sweep(self.size_study(size), voco_ks=self.ks)
        return self.sweeps[size.name]

    def size_study(self, size: LLMSize) -> Study:
        """The sweep's view of one LLM size: its config, runs folder and upper-bound model on
        the grid's shared data and questions."""
        return Study(self.size_cfg(size), self.steps, self.runs / size.name, self.data, self.qs, self.upper(size),
                     self.progress, self.families)

    def _upper_run(self, cfg: Config, upper) -> dict:
        from vocolab.evaluation.heldout import model_run
        from vocolab.zoo.costs import method_costs

        run = model_run(upper, self.data.tokenizer, self.data.splits["heldout"], self.qs, self.families,
                        name="upper", method="full", mask="causal", k=cfg.voco.tokens, progress=self.progress)
        study = Study(cfg, 0, self.runs, self.data, self.qs, upper, self.progress, self.families)
        _, features, q_ids = study.probe()
        run["cost"] = method_costs(upper, "full", features, q_ids, tokens=cfg.data.image_tokens,
                                   voco_tokens=cfg.voco.tokens)
        return run

    def question_tokens(self) -> float:
        """Q: the mean held-out question length in tokens (the question alone, no template)."""
        tok = self.data.tokenizer
        return float(np.mean([len(tok(q, add_special_tokens=False)["input_ids"]) for q in self.qs.questions]))


def run_scaling(preset_name: str = "nano", out: str | Path = "figures/scaling", *, seed: int = 0, sizes=None,
                methods=METHODS, ks=None, steps: int | None = None, limit: int | None = None,
                n_boot: int = N_BOOT, overrides: dict | None = None, command: str = "vocolab scaling",
                progress: bool = True) -> dict:
    """Run (or resume) the grid, fit the law and write results.json, table.md and the figures.

    `sizes`: `LLMSize`s or (hidden, layers, heads, intermediate) tuples (default `SIZES`,
    `QUICK_SIZES` in quick mode); `ks`: token counts K < V (default `KS`, `QUICK_KS` in
    quick mode; K = V is always each size's upper bound); `steps`: fine-tuning steps per
    cell (default `SCALING_STEPS`, 5 in quick mode); `n_boot`: bootstrap resamples.
    """
    from vocolab.data.scenes import FAMILIES
    from vocolab.evaluation.heldout import blind_run

    start = time.perf_counter()
    quick = quick_mode()
    cfg = study_config(preset_name, seed, overrides, QUICK)
    sizes = [as_size(s) for s in (sizes if sizes is not None else (QUICK_SIZES if quick else SIZES))]
    ks = tuple(ks if ks is not None else (QUICK_KS if quick else KS))
    methods = tuple(methods)
    steps = steps if steps is not None else (5 if quick else SCALING_STEPS)
    v = cfg.data.image_tokens
    cells = plan(sizes, methods, ks, v)
    out = Path(out)
    grid = ScalingGrid(cfg, runs_dir(cfg) / "scaling", steps, limit, progress, ks)
    ran: list[str] = []
    done, failed = run_cells(((grid.cell_name(s, c), grid.cell_key(s, c), lambda s=s, c=c: grid.run_cell(s, c))
                              for s, c in cells), out / "cells", desc="scaling", progress=progress, ran=ran)
    q_tokens = grid.question_tokens()
    runs = [with_flops(r, q_tokens) for r in done] + [blind_run(grid.data.splits["train"], grid.qs, FAMILIES)]
    scaling = {"sizes": [asdict(s) | {"name": s.name, "init_std": s.init_std, **grid.llm_params(s)} for s in sizes],
               "methods": list(methods), "ks": list(ks), "image_tokens": v, "steps": steps,
               "upper_steps": {"pretrain": cfg.train.pretrain_steps, "instruct": cfg.train.instruct_steps},
               "question_tokens": q_tokens, "failed": failed,
               "cells_wall_s": round(sum(r.get("wall_s", 0) for r in done), 1),
               "upper_stage_seconds": {s.name: grid.stage_seconds.get(s.name, {}) for s in sizes},
               "n": NOTE_N, "y": "error = 1 - held-out exact match",
               "flops": "flops_per_question = 2 N (Q + V) with Q the mean question length in tokens; "
                        "flops_per_question_cached = 2 N V (Q -> 0); measured_flops = vocolab's measured "
                        "prefill of one image and one question, nothing cached (zoo.costs)",
               "note": "wall_s of this invocation; cells_wall_s sums every cell's own time, including cells "
                       "finished by earlier (resumed) invocations"}
    analysis = analyse(runs, q_tokens, v, methods, n_boot=n_boot, seed=seed)
    eval_info = {"split": "heldout", "examples": len(grid.qs), "families": list(FAMILIES)}
    return finish("scaling", out, command, start, cfg, eval_info, runs, scaling,
                  partial(write_scaling_outputs, echo=progress), ran=ran, failed=failed, sections=analysis)


def with_flops(run: dict, q_tokens: float) -> dict:
    """The paper's FLOPs per question beside vocolab's measured ones; error = 1 - accuracy."""
    n, v = run["llm_params"], run["tokens"]
    cost = run.get("cost", {})
    return run | {"error": 1.0 - run["accuracy"], "flops_per_question": inference_flops(n, q_tokens, v),
                  "flops_per_question_cached": inference_flops(n, 0, v),
                  "measured_flops": cost.get("prefill_flops"), "question_flops": cost.get("question_flops")}


__all__ = [
    "KS", "LLMSize", "METHODS", "QUICK_KS", "QUICK_SIZES", "SCALING_STEPS", "SIZES", "ScalingGrid", "as_size", "plan",
    "run_scaling", "with_flops",
]
