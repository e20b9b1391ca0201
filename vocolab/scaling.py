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
    cells       (size, method, K) for K in `ks` (< V): VoCo (K VoCo tokens, voco mask)
                and QueCC (the zoo's query-conditioned compressor, for comparison),
                fine-tuned `steps` steps from the size's upper-bound model by the
                sweep's own cell code (`vocolab.sweep.Sweep.run_cell`)

N is the LLM's parameter count, `VoCoVLM.parameter_report()["llm"]`: every LLM weight,
the (tied) token embedding included (the paper's model sizes include embeddings too;
the non-embedding count is stored beside it: with 78 tokens the embedding is 1-5% of
N). V is the number of visual tokens the text sees (K, or all V patches for the upper
bound). Y = 1 - held-out exact match. The law is fitted per method (its K < V cells plus
every size's K = V upper bound) with `vocolab.scaling_fit` (bounded: the paper notes an
unbounded fit diverges), with a bootstrap over grid cells and two held-out checks (the
largest LLM's cells, i.e. extrapolation in N; and a seeded random 20% of the cells).
FLOPs per question are the paper's 2 N (Q + V), Q = the mean held-out question length
in tokens (and Q = 0, cached text), with vocolab's measured FLOPs (`zoo.costs`) beside.

Step budget (nano, 2-core CPU, fp32, batch 32). An instruct step costs ~0.2 s at hidden
128 / 4 layers (N = 0.86M; the nano quickstart: pretrain 0.19, upper 0.23, voco 0.21 s
per step); model it as t(N) ~ 0.03 s + 0.18 s * N / 0.86M. With the sizes below
(N = 0.11M, 0.37M, 0.86M, 1.93M, a 17x span) one step of every size costs
0.055 + 0.107 + 0.21 + 0.43 ~ 0.80 s. Each size trains pretrain 400 + upper 1100 (the
preset's) + 4 VoCo x 200 + 4 QueCC x 200 (`SCALING_STEPS`) = 3100 steps:
3100 x 0.80 ~ 2500 s. Add the CLIP stage (~15 s), 36 evaluations on the 2500 held-out
questions (~2-25 s each, ~250 s), cost measurements (~40 s) and trainer set-up
(~2 s x 41 fits): about 2900 s, 48 minutes, inside the 90-minute target with ~1.9x
headroom. `steps` (cell steps) and `--set train.pretrain_steps=... train.instruct_steps=...`
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
from pathlib import Path

import numpy as np
import torch

from .cells import key_of, model_id, run_cells
from .config import Config, quick_mode
from .outputs import write_json
from .scaling_fit import (
    PARAMS,
    TYPICAL_QUESTION_TOKENS,
    Law,
    bootstrap,
    fit_law,
    frontier,
    heldout_check,
    inference_flops,
    optimal_allocation,
    optimal_tokens,
)
from .sweep import QUICK, TRAINED, Cell, Sweep, runs_dir, study_config

METHODS = ("voco", "quecc")
KS = (1, 2, 4, 16)  # plus K = V (64 at nano): the upper-bound model itself
QUICK_KS = (1, 4)
SCALING_STEPS = 200  # fine-tuning steps of every (size, method, K) cell at nano
N_BOOT = 200
BETA_ZERO = 1e-6  # a fitted beta below this (on its lower bound) is reported as zero: no gain from tokens
#: The paper's constants (N in billions of parameters, V visual tokens), REFERENCE.md section 2.
PAPER = {"A": 0.56, "alpha": 0.077, "beta": 0.015, "D": 0.03, "N_unit": 1e9,
         "source": "Li et al. 2024 (arXiv 2411.03312), fit on N in {0.5, 1.8, 4, 7}B, "
                   "V in {1, 4, 16, 36, 64, 144, 576}"}
NOTE_N = ("N = VoCoVLM.parameter_report()['llm']: every LLM parameter, the tied token embedding "
          "included; llm_params_non_embedding excludes it")


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


class _SizeCells(Sweep):
    """The sweep's cell code (configure, train, evaluate, cost) for one LLM size, on the
    study's data, questions and that size's upper-bound model."""

    def __init__(self, cfg: Config, runs: Path, steps: int, data, qs, upper, progress: bool):  # noqa: D107
        from .data import FAMILIES

        self.cfg, self.out, self.runs, self.steps, self.progress = cfg, runs, runs, steps, progress
        self.families, self.data, self.qs, self.upper = FAMILIES, data, qs, upper
        self.base_id = model_id(upper)


class ScalingGrid:
    """State shared by the cells: config, data, questions, the shared CLIP, one upper-bound
    model per LLM size."""

    def __init__(self, cfg: Config, runs: Path, steps: int, limit: int | None, progress: bool):
        from .data import FAMILIES
        from .data.module import VoCoDataModule
        from .evaluate import Questions

        self.cfg, self.runs, self.steps, self.progress = cfg, runs, steps, progress
        self.families = FAMILIES
        self.data = VoCoDataModule(cfg, turns=cfg.train.turns, progress=progress)
        self.data.setup()
        self.qs = Questions.of(self.data.splits["heldout"], limit)
        self.clip_key = key_of({"clip": cfg.to_dict()})
        self._clip = None
        self.uppers: dict[str, torch.nn.Module] = {}
        self.stage_seconds: dict[str, dict] = {}

    def size_cfg(self, size: LLMSize) -> Config:
        return self.cfg.override(**size.overrides())

    # -- the shared CLIP ------------------------------------------------------------------------
    def clip(self):
        """The contrastive CLIP stage, trained once and kept under `runs/clip.pt`."""
        from .lit import ClipModule
        from .pipeline import clip_stage

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
        from .checkpoint import load_checkpoint, save_checkpoint
        from .pipeline import vlm_stage

        if size.name in self.uppers:
            return self.uppers[size.name]
        cfg = self.size_cfg(size)
        folder = self.runs / size.name / "upper-model"
        key = key_of({"cfg": cfg.to_dict(), "clip": self.clip_key})
        if (folder / "meta.json").exists():
            model, _, meta = load_checkpoint(folder)
            if meta.get("scaling_key") == key:
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
        return key_of({"cell": self.cell_name(size, cell), "cfg": self.size_cfg(size).to_dict(),
                       "steps": 0 if cell is None else self.steps, "base": model_id(upper),
                       "questions": len(self.qs)})

    def run_cell(self, size: LLMSize, cell: Cell | None) -> dict:
        start = time.perf_counter()
        cfg, upper = self.size_cfg(size), self.upper(size)
        if cell is None:
            run = self._upper_run(cfg, upper) | {"train_steps": 0,
                                                 "stage_seconds": self.stage_seconds.get(size.name, {})}
        else:
            run = _SizeCells(cfg, self.runs / size.name, self.steps, self.data, self.qs, upper,
                             self.progress).run_cell(cell)
        run |= {"name": self.cell_name(size, cell), "size": size.name, "llm": asdict(size), **self.llm_params(size),
                "wall_s": round(time.perf_counter() - start, 1)}
        return run

    def _upper_run(self, cfg: Config, upper) -> dict:
        from .evaluate import model_run
        from .zoo.costs import method_costs

        heldout, tok = self.data.splits["heldout"], self.data.tokenizer
        run = model_run(upper, tok, heldout, self.qs, self.families, name="upper", method="full", mask="causal",
                        k=cfg.voco.tokens, progress=self.progress)
        item = int(self.qs.item[0])
        q_ids = tok(self.qs.questions[0], add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            features = upper.encode_images(torch.from_numpy(heldout.images[item : item + 1]))
        run["cost"] = method_costs(upper, "full", features, q_ids, tokens=cfg.data.image_tokens,
                                   voco_tokens=cfg.voco.tokens)
        return run

    def question_tokens(self) -> float:
        """Q: the mean held-out question length in tokens (the question alone, no template)."""
        tok = self.data.tokenizer
        return float(np.mean([len(tok(q, add_special_tokens=False)["input_ids"]) for q in self.qs.questions]))


# ------------------------------------------------------------------------------- the study

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
    from .data import FAMILIES
    from .evaluate import blind_run
    from .report import results
    from .runtime import provenance

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
    grid = ScalingGrid(cfg, runs_dir(cfg) / "scaling", steps, limit, progress)
    done, failed = run_cells(((grid.cell_name(s, c), grid.cell_key(s, c), lambda s=s, c=c: grid.run_cell(s, c))
                              for s, c in cells), out / "cells", desc="scaling", progress=progress)
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
    body = results(provenance(command, cfg.preset, seed, time.perf_counter() - start, out),
                   {"split": "heldout", "examples": len(grid.qs), "families": list(FAMILIES)}, runs,
                   config=cfg.to_dict(), scaling=scaling, **analysis)
    write_scaling_outputs(body, out, echo=progress)
    return body


def with_flops(run: dict, q_tokens: float) -> dict:
    """The paper's FLOPs per question beside vocolab's measured ones; error = 1 - accuracy."""
    n, v = run["llm_params"], run["tokens"]
    cost = run.get("cost", {})
    return run | {"error": 1.0 - run["accuracy"], "flops_per_question": inference_flops(n, q_tokens, v),
                  "flops_per_question_cached": inference_flops(n, 0, v),
                  "measured_flops": cost.get("prefill_flops"), "question_flops": cost.get("question_flops")}


# ------------------------------------------------------------------------------- analysis

def grid_cells(runs: list[dict], method: str) -> list[dict]:
    """The cells of one method's law: its K < V cells and every size's upper bound (K = V)."""
    return [r for r in runs if "llm_params" in r and r["method"] in (method, "full")]


def _nvy(rows: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.array([r["llm_params"] for r in rows], dtype=float), np.array([r["tokens"] for r in rows], dtype=float),
            np.array([r["error"] for r in rows], dtype=float))


def law_from(d: dict) -> Law:
    """A `Law` back from its `to_dict()` (as stored in results.json)."""
    return Law(**{**d, "at_bound": tuple(d.get("at_bound", ()))})


def _heldout(n, v, y, mask, what: str) -> dict:
    free = len(PARAMS)
    if (~mask).sum() < free + 1 or len(set(n[~mask])) < 2 or len(set(v[~mask])) < 2:
        return {"what": what, "skipped": f"{int((~mask).sum())} cells left to fit ({len(set(n[~mask]))} LLM "
                                         f"sizes): too few for 4 constants"}
    check = heldout_check(n, v, y, mask)
    return {"what": what, **{k: val for k, val in check.items() if k != "law"}, "law": check["law"].to_dict()}


def fit_section(runs: list[dict], method: str, *, n_boot: int = N_BOOT, seed: int = 0,
                q_tokens: float = TYPICAL_QUESTION_TOKENS, image_tokens: int = 64) -> dict:
    """Bounded fit of Y = A N^-alpha V^-beta + D to one method's cells, its bootstrap and
    held-out checks; {"skipped": why} when the grid cannot determine four constants."""
    rows = grid_cells(runs, method)
    n, v, y = _nvy(rows)
    if len(rows) < len(PARAMS) + 1 or len(set(n)) < 2 or len(set(v)) < 2:
        return {"method": method, "cells": len(rows),
                "skipped": f"{len(rows)} cells over {len(set(n))} LLM sizes and {len(set(v))} token counts: "
                           f"the law's 4 constants need >= 5 cells, >= 2 sizes and >= 2 token counts"}
    law = fit_law(n, v, y)
    boot = bootstrap(n, v, y, n=n_boot, seed=seed)
    meta = boot.pop("meta")
    rng = np.random.default_rng(seed)
    random_mask = np.zeros(len(rows), dtype=bool)
    random_mask[rng.choice(len(rows), max(1, round(0.2 * len(rows))), replace=False)] = True
    largest = n == n.max()
    return {
        "method": method, "cells": len(rows), "names": [r["name"] for r in rows],
        "law": law.to_dict(), "A_per_billion": law.A_for_unit(1e9),
        "alpha_over_beta": law.alpha / law.beta if law.beta > BETA_ZERO else None,
        "bootstrap": boot | {"n": meta["n"], "seed": meta["seed"], "n_ref": meta["n_ref"],
                             "resampled": "grid cells, with replacement"},
        "heldout": {"largest_n": _heldout(n, v, y, largest, "every cell of the largest LLM held out "
                                                            "(extrapolation in N)"),
                    "random_20pct": _heldout(n, v, y, random_mask, f"a seeded random 20% of the cells "
                                                                   f"(seed {seed})")},
        "optimal_tokens": {f"Q={q:g}": optimal_tokens(law, q, V_max=image_tokens)
                           for q in (q_tokens, TYPICAL_QUESTION_TOKENS, 0.0)},
    }


def _budgets(ns, vs, q: float, count: int = 5) -> np.ndarray:
    """`count` budgets spread (log) strictly inside the grid's FLOPs range at this Q."""
    flops = inference_flops(np.asarray(ns)[:, None], q, np.asarray(vs)[None, :])
    return np.geomspace(flops.min(), flops.max(), count + 2)[1:-1]


def optimal_section(law: Law, runs: list[dict], q_tokens: float, *, budgets=None) -> dict:
    """The law's best (N, V) per budget (grid of measured sizes x token counts, and V
    continuous) for Q = the questions' mean length, the paper's 50 and 0 (cached text),
    beside the best *measured* cell that fits each budget."""
    cells = [r for r in runs if "llm_params" in r]
    ns = sorted({r["llm_params"] for r in cells})
    vs = sorted({r["tokens"] for r in cells})
    qs = {"questions": q_tokens, "paper": float(TYPICAL_QUESTION_TOKENS), "cached": 0.0}
    rows = []
    for label, q in qs.items():
        these = budgets if budgets is not None else _budgets(ns, vs, q)
        for row in optimal_allocation(law, these, q, ns, vs, continuous=True):
            fits = [r for r in cells if inference_flops(r["llm_params"], q, r["tokens"]) <= row["budget"] * (1 + 1e-12)]
            best = min(fits, key=lambda r: (r["error"], inference_flops(r["llm_params"], q, r["tokens"])),
                       default=None)
            rows.append(row | {"text": label, "measured": None if best is None else {
                "name": best["name"], "method": best["method"], "N": best["llm_params"], "V": best["tokens"],
                "error": best["error"], "flops": inference_flops(best["llm_params"], q, best["tokens"])}})
    return {"Q": qs, "rows": rows, "N_choices": ns, "V_choices": vs,
            "law": "searched over the measured LLM sizes x token counts (grid) and with V continuous in [1, V]"}


def frontier_section(runs: list[dict], q_tokens: float) -> dict:
    """Measured Pareto frontier (fewer FLOPs, less error) over every cell, per Q."""
    cells = [r for r in runs if "llm_params" in r]
    out = {}
    for label, q in (("questions", q_tokens), ("cached", 0.0)):
        pts = [{"flops": inference_flops(r["llm_params"], q, r["tokens"]), "error": r["error"], "name": r["name"]}
               for r in cells]
        out[label] = [p["name"] for p in frontier(pts)]
    return out


def analyse(runs: list[dict], q_tokens: float, image_tokens: int, methods=METHODS, *, n_boot: int = N_BOOT,
            seed: int = 0) -> dict:
    """`fit` (one law per method, the paper's constants beside), `optimal` and `frontier`."""
    fits = {m: fit_section(runs, m, n_boot=n_boot, seed=seed, q_tokens=q_tokens, image_tokens=image_tokens)
            for m in methods}
    primary = "voco" if "voco" in fits else next(iter(fits), None)
    fit = {"primary": primary, "laws": fits, "paper": PAPER, "n": NOTE_N, "y": "1 - held-out exact match",
           "bounds": "A_ref in [1e-8, 1e8], alpha and beta in [0, 2], D in [0, min(Y)] (scaling_fit.DEFAULT_BOUNDS)",
           "cells": "each method's K < V cells plus every size's K = V upper bound"}
    optimal = None
    if primary is not None and "law" in fits[primary]:
        optimal = optimal_section(law_from(fits[primary]["law"]), runs, q_tokens) | {"method": primary}
    return {"fit": fit, "optimal": optimal, "frontier": frontier_section(runs, q_tokens)}


# ------------------------------------------------------------------------------- report

def _fmt_flops(x: float | None) -> str:
    from .plotting import _human

    return "-" if x is None else _human(x)


def _interval(boot: dict, name: str, fmt: str = ".3g") -> str:
    b = boot.get(name)
    return "" if b is None else f" [{b['p2.5']:{fmt}}, {b['p97.5']:{fmt}}]"


def scaling_markdown(body: dict) -> str:
    """The grid, the fitted constants with bootstrap intervals next to the paper's, the
    held-out checks and the optimal (N, V) per budget."""
    s = body["scaling"]
    cells = [r for r in body["runs"] if "llm_params" in r]
    sizes = sorted({(r["llm_params"], r["size"]) for r in cells})
    ks = sorted({r["tokens"] for r in cells})
    head = ["LLM", "N (LLM params)", "method", *[f"V={k}" for k in ks]]
    lines = [f"Held-out error (1 - exact match, {body['eval']['examples']} questions); V = visual tokens the text "
             f"sees (V={s['image_tokens']}: the size's upper-bound model, all patches):", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n, size in sizes:
        for method in s["methods"]:
            by_k = {r["tokens"]: r for r in cells if r["size"] == size and r["method"] in (method, "full")}
            lines.append("| " + " | ".join([size, f"{n:,}", method] + [
                f"{by_k[k]['error']:.3f}" if k in by_k else "-" for k in ks]) + " |")
    blind = next((r for r in body["runs"] if r["name"] == "blind"), None)
    if blind is not None:
        lines += ["", f"Blind (question only, no image): error {1 - blind['accuracy']:.3f}."]
    lines += ["", f"Fit of Y = A N^-alpha V^-beta + D (bounded; 95% bootstrap intervals over grid cells). "
                  f"A is for N in billions, as the paper quotes it; A_ref for N in multiples of n_ref:", "",
              "| law | cells | A (N in 1e9) | A_ref (n_ref) | alpha | beta | D | alpha/beta | rmse | at bound |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for method, f in body["fit"]["laws"].items():
        if "law" not in f:
            lines.append(f"| {method} | {f['cells']} | skipped: {f['skipped']} |||||||| ")
            continue
        law, boot = f["law"], f["bootstrap"]
        ratio = "-" if f["alpha_over_beta"] is None else f"{f['alpha_over_beta']:.2g}"
        lines.append(f"| {method} | {f['cells']} | {f['A_per_billion']:.3g} | "
                     f"{law['A_ref']:.3g}{_interval(boot, 'A_ref')} ({law['n_ref']:.0e}) | "
                     f"{law['alpha']:.3f}{_interval(boot, 'alpha', '.3f')} | "
                     f"{law['beta']:.3f}{_interval(boot, 'beta', '.3f')} | "
                     f"{law['D']:.3f}{_interval(boot, 'D', '.3f')} | "
                     f"{ratio} | {law['rmse']:.4f} | {', '.join(law['at_bound']) or '-'} |")
    p = body["fit"]["paper"]
    lines.append(f"| paper | 4 N x 7 V | {p['A']} | - | {p['alpha']} | {p['beta']} | {p['D']} | "
                 f"{p['alpha'] / p['beta']:.2g} | - | - |")
    lines += ["", "Held-out checks (fit without the held-out cells, predict them):", "",
              "| law | held out | cells fitted / held | mean abs error | max abs error |", "|---|---|---|---|---|"]
    for method, f in body["fit"]["laws"].items():
        for check in f.get("heldout", {}).values():
            if "skipped" in check:
                lines.append(f"| {method} | {check['what']} | skipped: {check['skipped']} | | |")
            else:
                lines.append(f"| {method} | {check['what']} | {check['n_fit']} / {check['n_held']} | "
                             f"{check['abs_mean']:.3f} | {check['abs_max']:.3f} |")
    opt = body.get("optimal")
    if opt:
        lines += ["", f"Inference-optimal (N, V) per FLOPs budget (2 N (Q + V)), from the {opt['method']} law "
                      f"(grid of measured sizes x token counts) and the best measured cell (any method) "
                      f"that fits:", "",
                  "| text | Q | budget | law: N | law: V | predicted error | measured best | its error |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in opt["rows"]:
            m = r["measured"]
            law_cells = (f"{r['N']:,.0f} | {r['V']:g} | {r['error']:.3f}" if r["feasible"] else "- | - | -")
            lines.append(f"| {r['text']} | {r['Q']:.1f} | {_fmt_flops(r['budget'])} | {law_cells} | "
                         f"{'-' if m is None else m['name']} | {'-' if m is None else format(m['error'], '.3f')} |")
        f = body["fit"]["laws"][opt["method"]]
        lines += ["", "Closed-form optimum V* = beta Q / (alpha - beta) (any N): " + ", ".join(
            f"{q}: {v:.2f}" for q, v in f["optimal_tokens"].items()) + "."]
    lines += ["", "FLOPs per question, the paper's 2 N (Q + V) beside vocolab's measured prefill (one image, "
                  "one question, nothing cached: VoCo still runs all V patches through the LLM to fill its "
                  "cache):", "", "| cell | N | V | 2N(Q+V) | 2NV (Q=0) | measured prefill | per question, cached |",
              "|---|---|---|---|---|---|---|"]
    for r in sorted(cells, key=lambda r: (r["llm_params"], r["method"] != "full", r["method"], r["tokens"])):
        lines.append(f"| {r['name']} | {r['llm_params']:,} | {r['tokens']} | {_fmt_flops(r['flops_per_question'])} | "
                     f"{_fmt_flops(r['flops_per_question_cached'])} | {_fmt_flops(r.get('measured_flops'))} | "
                     f"{_fmt_flops(r.get('question_flops'))} |")
    return "\n".join(lines)


def _size_colors(body: dict) -> dict:
    import seaborn as sns

    sizes = [s for _, s in sorted({(r["llm_params"], r["size"]) for r in body["runs"] if "llm_params" in r})]
    return dict(zip(sizes, sns.color_palette("viridis", len(sizes))))


def _primary_law(body: dict) -> Law | None:
    f = body["fit"]["laws"].get(body["fit"]["primary"] or "", {})
    return law_from(f["law"]) if "law" in f else None


def plot_error_vs_flops(body: dict):
    """Error against log FLOPs per question, one colour per LLM size: the paper's 2N(Q+V)
    with the questions' Q and with cached text (Q = 0), then vocolab's measured prefill.
    Lines: measured VoCo (solid, K = V included) and QueCC (dashed, hollow); the fitted
    law per size (dotted, V continuous); the law's inference-optimal frontier (grey) and
    the measured Pareto frontier (black steps)."""
    from .plotting import _finish, _human, _new_figure

    s = body["scaling"]
    q = s["question_tokens"]
    cells = [r for r in body["runs"] if "llm_params" in r]
    colors = _size_colors(body)
    law = _primary_law(body)
    fig, axes = _new_figure((15.5, 4.6), 1, 3, sharey=True)
    panels = ((f"2 N (Q + V), Q = {q:.1f} (the questions)", lambda r: r["flops_per_question"], q),
              ("2 N V, Q = 0 (cached text)", lambda r: r["flops_per_question_cached"], 0.0),
              ("measured prefill, one image + one question", lambda r: r.get("measured_flops"), None))
    markers = {"voco": "o", "quecc": "s"}
    for ax, (title, x_of, q_panel) in zip(axes[0], panels):
        for size, color in colors.items():
            mine = [r for r in cells if r["size"] == size]
            upper = [r for r in mine if r["method"] == "full"]
            for method in s["methods"]:
                rows = sorted([r for r in mine if r["method"] == method] + upper, key=lambda r: r["tokens"])
                xs = [x_of(r) for r in rows]
                if not rows or any(x is None for x in xs):
                    continue
                solid = method == (body["fit"]["primary"] or "voco")
                line = ("-" if solid else "--") if q_panel is not None else "none"  # measured: no order in x
                ax.plot(xs, [r["error"] for r in rows], color=color, lw=1.4 if solid else 1.0,
                        ls=line, marker=markers.get(method, "^"), ms=4,
                        mfc=color if solid else "white", zorder=3)
            for r in upper:
                if x_of(r) is not None:
                    ax.scatter(x_of(r), r["error"], marker="*", s=90, color=color, edgecolor="black", lw=0.5, zorder=5)
            if law is not None and q_panel is not None and mine:
                n = mine[0]["llm_params"]
                v = np.geomspace(1, s["image_tokens"], 50)
                ax.plot(inference_flops(n, q_panel, v), law.predict(n, v), color=color, lw=0.9, ls=":")
        if q_panel is not None:
            pts = [{"flops": x_of(r), "error": r["error"]} for r in cells]
            front = frontier(pts)
            ax.step([p["flops"] for p in front], [p["error"] for p in front], where="post", color="black", lw=1.2,
                    zorder=4)
            if law is not None:
                ns = sorted({r["llm_params"] for r in cells})
                lo = min(p["flops"] for p in pts)
                hi = max(p["flops"] for p in pts)
                budgets = np.geomspace(lo, hi, 80)
                rows = optimal_allocation(law, budgets, q_panel, ns, [1, s["image_tokens"]], continuous=True,
                                          V_max=s["image_tokens"])
                best = [row["continuous"] for row in rows]
                keep = [(b, c["error"]) for b, c in zip(budgets, best) if c is not None]
                if keep:
                    ax.plot(*zip(*keep), color="0.55", lw=3, alpha=0.45, zorder=1)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(lambda x, _: _human(x))
        ax.xaxis.set_minor_formatter(lambda x, _: "")
        ax.set_xlabel(f"FLOPs per question: {title}")
        ax.grid(alpha=0.3, which="both", lw=0.5)
    axes[0, 0].set_ylabel("held-out error (1 - exact match)")
    for size, color in colors.items():
        n = next(r["llm_params"] for r in cells if r["size"] == size)
        axes[0, 0].plot([], [], color=color, lw=2, label=f"{size} (N={_human(n)})")
    for method in s["methods"]:
        solid = method == (body["fit"]["primary"] or "voco")
        axes[0, 1].plot([], [], color="0.3", ls="-" if solid else "--", marker=markers.get(method, "^"),
                        mfc="0.3" if solid else "white", label=f"{method} (K < V) + upper (V)")
    axes[0, 1].scatter([], [], marker="*", s=90, color="0.3", edgecolor="black", lw=0.5,
                       label=f"upper bound (all V = {s['image_tokens']} tokens)")
    axes[0, 1].plot([], [], color="0.3", ls=":", label="fitted law (V continuous)")
    axes[0, 1].plot([], [], color="0.55", lw=3, alpha=0.45, label="law's optimal frontier")
    axes[0, 1].step([], [], color="black", label="measured frontier")
    axes[0, 0].legend(fontsize=7, frameon=False)
    axes[0, 1].legend(fontsize=7, frameon=False)
    if law is not None:
        fig.suptitle(f"error against inference compute ({body['fit']['primary']} law: alpha={law.alpha:.3f}, "
                     f"beta={law.beta:.3f}; paper: 0.077, 0.015)", fontsize=10)
    return _finish(fig)


def plot_fit_residuals(body: dict):
    """Left: predicted against measured error (fitted cells, and the largest LLM's cells
    predicted by the fit that did not see them). Right: error against V per size with the
    law's curves."""
    from .plotting import _finish, _new_figure

    s = body["scaling"]
    fig, axes = _new_figure((11, 4.3), 1, 2)
    left, right = axes[0]
    primary = body["fit"]["primary"]
    law = _primary_law(body)
    colors = _size_colors(body)
    cells = [r for r in grid_cells(body["runs"], primary or "voco")]
    if law is None:
        left.text(0.5, 0.5, "no fit: " + body["fit"]["laws"].get(primary or "", {}).get("skipped", ""),
                  ha="center", va="center", wrap=True, fontsize=8, transform=left.transAxes)
    else:
        for r in cells:
            left.scatter(r["error"], law.predict(r["llm_params"], r["tokens"]), color=colors[r["size"]], s=22, zorder=3)
        check = body["fit"]["laws"][primary]["heldout"]["largest_n"]
        if "predicted" in check:
            left.scatter(check["actual"], check["predicted"], marker="x", color="crimson", s=40, zorder=4,
                         label=f"largest LLM, predicted by the fit without it (mean |err| {check['abs_mean']:.3f})")
            left.legend(fontsize=7, frameon=False, loc="upper left")
        lo = min(r["error"] for r in cells) - 0.02
        hi = max(r["error"] for r in cells) + 0.02
        left.plot([lo, hi], [lo, hi], color="0.4", lw=0.8, ls="--")
        left.set_title(f"{primary} law: rmse {law.rmse:.4f} over {law.n_points} cells", fontsize=9)
    left.set_xlabel("measured error")
    left.set_ylabel("predicted error")
    for size, color in colors.items():
        mine = sorted([r for r in body["runs"] if r.get("size") == size], key=lambda r: r["tokens"])
        for method in s["methods"]:
            rows = [r for r in mine if r["method"] == method]
            solid = method == (primary or "voco")
            right.plot([r["tokens"] for r in rows], [r["error"] for r in rows], ls="none",
                       marker="o" if solid else "s", color=color, mfc=color if solid else "white", ms=5)
        for r in mine:
            if r["method"] == "full":
                right.scatter(r["tokens"], r["error"], marker="*", s=90, color=color, edgecolor="black", lw=0.5,
                              zorder=4)
        if law is not None and mine:
            v = np.geomspace(1, s["image_tokens"], 50)
            right.plot(v, law.predict(mine[0]["llm_params"], v), color=color, lw=1, label=size)
    right.set_xscale("log", base=2)
    right.set_xlabel("visual tokens V (log; filled = " + (primary or "voco") + ", hollow = other methods, "
                     "star = upper bound)")
    right.set_ylabel("held-out error")
    right.set_title("error against V per LLM size, with the fitted law", fontsize=9)
    right.legend(fontsize=7, frameon=False)
    return _finish(fig)


def write_scaling_outputs(body: dict, out: Path, echo: bool = True) -> None:
    """results.json, table.md and the two figures, all from the results body."""
    from .plotting import save_figure

    out = Path(out)
    write_json(out / "results.json", body)
    (out / "table.md").write_text(scaling_markdown(body) + "\n")
    save_figure(plot_error_vs_flops(body), out / "error_vs_flops.png")
    save_figure(plot_fit_residuals(body), out / "fit_residuals.png")
    if echo:
        print(scaling_markdown(body))


__all__ = ["KS", "LLMSize", "METHODS", "PAPER", "QUICK_KS", "QUICK_SIZES", "SCALING_STEPS", "SIZES", "ScalingGrid",
           "analyse", "fit_section", "frontier_section", "grid_cells", "law_from", "optimal_section", "plan",
           "plot_error_vs_flops", "plot_fit_residuals", "run_scaling", "scaling_markdown", "with_flops",
           "write_scaling_outputs"]
