"""Turning a fitted scaling law into the decision the paper is about: for a fixed
inference budget `inference_flops(N, Q, V) = 2 N (Q + V)` FLOPs per question (Q text
tokens, V visual tokens, N LLM parameters), which (LLM size, token count) pair gives the
least error (`optimal_allocation`, and the closed-form `optimal_tokens`); `frontier`
extracts the measured Pareto front for a plot.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import numpy as np

from vocolab.evaluation.scaling_law import Law


def inference_flops(N, Q, V):
    """FLOPs per question, the paper's accounting: 2 * N * (Q + V).

    2 N FLOPs per token through an N-parameter LLM (one multiply-add per weight) over
    the Q text tokens and V visual tokens of the prompt; attention's quadratic term and
    the vision encoder are ignored, as in the paper. Q -> 0 models a cached text prefix
    (many questions about one image, or the query's K/V reused), which is where the
    "one visual token" optimum is sharpest. Scalars in, float out; arrays broadcast.
    """
    n = np.asarray(N, dtype=float)
    q = np.asarray(Q, dtype=float)
    v = np.asarray(V, dtype=float)
    if np.any(~np.isfinite(n)) or np.any(n <= 0):
        raise ValueError("inference_flops: N must be positive and finite")
    if np.any(~np.isfinite(q)) or np.any(q < 0):
        raise ValueError("inference_flops: Q must be >= 0 and finite")
    if np.any(~np.isfinite(v)) or np.any(v < 0):
        raise ValueError("inference_flops: V must be >= 0 and finite")
    out = 2.0 * n * (q + v)
    return float(out) if out.ndim == 0 else out


def optimal_tokens(law: Law, Q: float, V_max: float | None = None) -> float:
    """Closed-form best V when N may take any value: at fixed C = 2 N (Q + V),
    N = C / (2 (Q + V)) and d/dV log(Y - D) = alpha / (Q + V) - beta / V = 0 gives
    V* = beta Q / (alpha - beta), independent of the budget; clipped to [1, V_max].
    With Q = 0 (cached text) or beta = 0 it is 1 token. If beta >= alpha, more tokens
    always pay and V* = V_max (which must then be given)."""
    if Q < 0:
        raise ValueError(f"optimal_tokens: Q must be >= 0, got {Q}")
    if V_max is not None and V_max < 1:
        raise ValueError(f"optimal_tokens: V_max must be >= 1, got {V_max}")
    if law.beta >= law.alpha and law.beta > 0:
        if V_max is None:
            raise ValueError("optimal_tokens: beta >= alpha, so the optimum is the largest V; give V_max")
        return float(V_max)
    v = law.beta * Q / (law.alpha - law.beta) if law.alpha > law.beta else 1.0
    v = max(1.0, v)
    return float(min(v, V_max)) if V_max is not None else float(v)


def _as_choices(name: str, values) -> np.ndarray:
    a = np.asarray(values, dtype=float).reshape(-1)
    if a.size == 0:
        raise ValueError(f"{name} is empty")
    if np.any(~np.isfinite(a)) or np.any(a <= 0):
        raise ValueError(f"{name} must be positive and finite")
    return np.unique(a)


def optimal_allocation(law: Law, budgets, Q, N_choices, V_choices, *, continuous: bool = False,
                       V_max: float | None = None) -> list[dict]:
    """For each FLOPs budget, the (N, V) with least predicted error under the budget.

    Searches the discrete grid N_choices x V_choices (the models and compressor
    settings that exist) for cells with inference_flops(N, Q, V) <= budget and returns
    the one with the lowest `law.predict`; ties go to fewer FLOPs. `Q` is a question
    length or a sequence of them: pass (TYPICAL_QUESTION_TOKENS, 0) to get both the
    uncached and the cached-text (Q = 0) answers; rows come Q by Q, budgets in order.
    Each row: {"Q", "budget", "feasible", "N", "V", "flops", "error"} (None where no
    cell fits the budget).

    With `continuous=True` each row also has "continuous": for each N in N_choices, V
    is taken continuous in [1, V_max] (V_max defaults to max(V_choices)) and set to the
    largest value the budget allows (error falls with V at fixed N), and the best N is
    kept: {"N", "V", "flops", "error"} or None. With beta << alpha (the paper's finding)
    the grid answer is the largest N that fits with V at its minimum.
    """
    budgets_a = np.asarray(budgets, dtype=float).reshape(-1)
    if budgets_a.size == 0:
        raise ValueError("budgets is empty")
    if np.any(~np.isfinite(budgets_a)) or np.any(budgets_a <= 0):
        raise ValueError("budgets must be positive and finite")
    qs = [Q] if np.ndim(Q) == 0 else list(Q)
    if not qs:
        raise ValueError("Q is empty")
    for q in qs:
        if not (math.isfinite(float(q)) and float(q) >= 0):
            raise ValueError(f"Q must be >= 0 and finite, got {q}")
    ns = _as_choices("N_choices", N_choices)
    vs = _as_choices("V_choices", V_choices)
    v_max = float(vs.max()) if V_max is None else float(V_max)
    if continuous and v_max < 1:
        raise ValueError(f"V_max must be >= 1, got {V_max}")

    grid_n, grid_v = np.meshgrid(ns, vs, indexing="ij")
    grid_n, grid_v = grid_n.reshape(-1), grid_v.reshape(-1)
    grid_err = np.asarray(law.predict(grid_n, grid_v), dtype=float).reshape(-1)

    rows = []
    for q in qs:
        q = float(q)
        grid_flops = inference_flops(grid_n, q, grid_v)
        for budget in budgets_a:
            row: dict[str, Any] = {"Q": q, "budget": float(budget)}
            ok = grid_flops <= budget * (1 + 1e-12)
            if ok.any():
                cand = np.flatnonzero(ok)
                best = cand[np.lexsort((grid_flops[cand], grid_err[cand]))[0]]
                row.update(feasible=True, N=float(grid_n[best]), V=float(grid_v[best]),
                           flops=float(grid_flops[best]), error=float(grid_err[best]))
            else:
                row.update(feasible=False, N=None, V=None, flops=None, error=None)
            if continuous:
                best_c = None
                for n_ in ns:
                    v = min(v_max, budget / (2.0 * n_) - q)
                    if v < 1:
                        continue
                    err = law.predict(n_, v)
                    if best_c is None or err < best_c["error"]:
                        best_c = {"N": float(n_), "V": float(v),
                                  "flops": inference_flops(n_, q, v), "error": float(err)}
                row["continuous"] = best_c
            rows.append(row)
    return rows


def _flops_error(p) -> tuple[float, float]:
    if isinstance(p, Mapping):
        if "flops" not in p or "error" not in p:
            raise ValueError(f"frontier: mapping points need 'flops' and 'error' keys, got {sorted(p)}")
        f, e = p["flops"], p["error"]
    else:
        try:
            f, e = p[0], p[1]
        except (TypeError, IndexError, KeyError):
            raise ValueError(f"frontier: a point must be (flops, error, ...) or a mapping, got {p!r}")
    f, e = float(f), float(e)
    if not (math.isfinite(f) and math.isfinite(e)):
        raise ValueError(f"frontier: non-finite point {p!r}")
    return f, e


def frontier(points: Iterable) -> list:
    """The lower-left Pareto frontier (less compute, less error) of measured points.

    A point is on it if no other point has FLOPs <= and error <= with one of them
    strictly less: these are the configurations worth running at some budget, and
    joining them gives the "best achievable error per FLOP" curve of the paper's plot.
    Points are (flops, error, ...) sequences or mappings with "flops" and "error"
    keys (extra fields such as N and V ride along). Returns the original point objects
    on the frontier, sorted by increasing FLOPs (so strictly decreasing error); of
    exact duplicates the first is kept.
    """
    pts = list(points)
    keyed = [(*_flops_error(p), i) for i, p in enumerate(pts)]
    keyed.sort()
    out, best_err = [], math.inf
    for f, e, i in keyed:
        if e < best_err:
            out.append(pts[i])
            best_err = e
    return out
