"""From a measured scaling grid to the paper's three answers: the law per method (with a
bootstrap and two held-out checks), the inference-optimal (N, V) per FLOPs budget, and
the measured Pareto frontier. Each is a section of the scaling study's results file,
computed from its cells alone, so the analysis can be redone from the file.
"""

from __future__ import annotations

import numpy as np

from vocolab.evaluation.scaling_budget import frontier, inference_flops, optimal_allocation, optimal_tokens
from vocolab.evaluation.scaling_law import PARAMS, TYPICAL_QUESTION_TOKENS, Law, bootstrap, fit_law, heldout_check

N_BOOT = 200

BETA_ZERO = 1e-6  # a fitted beta below this (on its lower bound) is reported as zero: no gain from tokens

#: The paper's constants (N in billions of parameters, V visual tokens): Li et al. 2024, Eq. 1 and Table 1.
PAPER = {"A": 0.56, "alpha": 0.077, "beta": 0.015, "D": 0.03, "N_unit": 1e9,
         "source": "Li et al. 2024 (arXiv 2411.03312), fit on N in {0.5, 1.8, 4, 7}B, "
                   "V in {1, 4, 16, 36, 64, 144, 576}"}

NOTE_N = ("N = VoCoVLM.parameter_report()['llm']: every LLM parameter, the tied token embedding "
          "included; llm_params_non_embedding excludes it")


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


def analyse(runs: list[dict], q_tokens: float, image_tokens: int, methods, *, n_boot: int = N_BOOT,
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


__all__ = [
    "BETA_ZERO", "NOTE_N", "N_BOOT", "PAPER", "analyse", "fit_section", "frontier_section", "grid_cells", "law_from",
    "optimal_section",
]
