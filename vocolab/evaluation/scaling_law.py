"""The inference-optimal scaling law of Li et al. 2024 ("Inference Optimal VLMs Need Only
One Visual Token but Larger Models", arXiv 2411.03312), as plain numerics.

    Y(N, V) = A * N^-alpha * V^-beta + D

Y is downstream error, N the LLM's parameter count and V the number of visual tokens
per image. This module fits the four constants to a measured grid of (N, V, Y) cells,
says how well they are determined (`bootstrap`) and whether the law predicts cells it
did not see (`heldout_check`); `evaluation.scaling_budget` turns a fitted law into the
decision the paper is about. No training happens here; the grid runner
(`studies.scaling`) produces the cells.

Units. A depends on the unit of N (A_raw * N^-alpha = A_raw * n_ref^-alpha * (N/n_ref)^-alpha),
so `Law` carries both: `A` for N in the units it was given (e.g. raw parameter counts)
and `A_ref` for N measured in multiples of `n_ref`. The fit itself works on
(log A_ref, alpha, beta, D) with N / n_ref: raw N^-alpha spans many orders of
magnitude while alpha moves (1e9^-alpha runs from 1 to 1e-18 over alpha in [0, 2]),
which makes the least-squares problem badly scaled; A_ref is the error term of a model
of size n_ref at V = 1, a number of the same order as Y. The paper quotes A for N in
billions: `law.A_for_unit(1e9)`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np

#: Question length used for FLOPs accounting when nothing better is known: the paper's
#: plots use 50 text tokens per question (its released `objective.py`, TEXT_TOKENS=50).
TYPICAL_QUESTION_TOKENS = 50

PARAMS = ("A", "alpha", "beta", "D")

#: Default box for the fit. A is bounded through A_ref (the normalised coefficient);
#: D's upper bound `None` means min(Y): the irreducible error cannot sit above the
#: best error that was actually measured.
DEFAULT_BOUNDS: dict[str, tuple[float, float | None]] = {
    "A": (1e-8, 1e8),
    "alpha": (0.0, 2.0),
    "beta": (0.0, 2.0),
    "D": (0.0, None),
}


@dataclass(frozen=True)
class Law:
    """A fitted Y(N, V) = A * N^-alpha * V^-beta + D.

    A:      coefficient for N in the units the fit was given (raw parameter counts
            if that is what was passed).
    A_ref:  the same coefficient for N expressed in multiples of `n_ref`,
            i.e. Y = A_ref * (N / n_ref)^-alpha * V^-beta + D. This is the quantity
            that was fitted (in log) and the one the A bounds apply to.
    n_ref:  the normalisation of N used in the fit.
    rmse:   root-mean-square residual over the fitted points.
    n_points: number of (N, V, Y) cells fitted.
    at_bound: names of constants that ended on (within 1e-6 relative of) a bound of
            the box; a constant stuck at a bound is not determined by the data.
    """

    A: float
    alpha: float
    beta: float
    D: float
    rmse: float
    n_points: int
    A_ref: float
    n_ref: float
    at_bound: tuple[str, ...] = ()

    def predict(self, N, V):
        """Predicted error at (N, V); scalars or broadcastable arrays."""
        N = np.asarray(N, dtype=float)
        V = np.asarray(V, dtype=float)
        out = self.A_ref * (N / self.n_ref) ** (-self.alpha) * V ** (-self.beta) + self.D
        return float(out) if out.ndim == 0 else out

    def A_for_unit(self, unit: float) -> float:
        """A for N measured in `unit`s (e.g. 1e9 to compare with the paper's A ~ 0.56)."""
        if not unit > 0:
            raise ValueError(f"A_for_unit: unit must be positive, got {unit}")
        return self.A_ref * (unit / self.n_ref) ** (-self.alpha)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["at_bound"] = list(self.at_bound)
        return d


def _as_cells(N, V, Y) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    arrays = []
    for name, x in (("N", N), ("V", V), ("Y", Y)):
        a = np.asarray(x, dtype=float)
        if a.ndim != 1:
            a = a.reshape(-1) if a.ndim > 1 else a.reshape(1)
        arrays.append(a)
    n, v, y = arrays
    if not len(n) == len(v) == len(y):
        raise ValueError(f"N, V and Y must have the same length, got {len(n)}, {len(v)}, {len(y)}")
    for name, a in (("N", n), ("V", v), ("Y", y)):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} contains non-finite values")
    if np.any(n <= 0):
        raise ValueError(f"N (LLM parameters) must be positive, got min {n.min()}")
    if np.any(v <= 0):
        raise ValueError(f"V (visual tokens) must be positive, got min {v.min()}")
    return n, v, y


def _default_n_ref(n: np.ndarray) -> float:
    """A power of ten near the geometric mean of N: readable, and keeps log(N / n_ref)
    of order one, so A_ref is of the order of the measured errors."""
    return float(10.0 ** round(float(np.mean(np.log10(n)))))


def _resolve_bounds(bounds: Mapping[str, tuple] | None, y: np.ndarray) -> dict[str, tuple[float, float]]:
    merged: dict[str, tuple] = dict(DEFAULT_BOUNDS)
    if bounds:
        unknown = set(bounds) - set(PARAMS)
        if unknown:
            raise ValueError(f"unknown bound(s) {sorted(unknown)}; known: {list(PARAMS)}")
        merged.update(bounds)
    out = {}
    for name in PARAMS:
        lo, hi = merged[name]
        if name == "D" and hi is None:
            hi = max(float(np.min(y)), float(lo))
        lo, hi = float(lo), float(hi)
        if math.isnan(lo) or math.isnan(hi) or lo > hi:
            raise ValueError(f"bounds for {name} must satisfy lo <= hi, got ({lo}, {hi})")
        if name == "A" and not lo > 0:
            raise ValueError(f"A's lower bound must be positive (the fit works on log A), got {lo}")
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError(f"bounds for {name} must be finite, got ({lo}, {hi})")
        out[name] = (lo, hi)
    return out


def _best_a_d(g: np.ndarray, y: np.ndarray, a_box: tuple[float, float],
              d_box: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each row of g (the shape term (N/n_ref)^-alpha V^-beta of one (alpha, beta)),
    the exact least-squares (A, D) inside their box, and its sum of squares.

    Given the exponents the law is linear in A and D, so this is a 2-variable convex
    quadratic on a rectangle: its minimum is the unconstrained solution when that lies
    inside, otherwise the best of the four edges, each minimised exactly by clipping.
    """
    m = y.shape[0]
    sg, sgg, sgy = g.sum(1), np.einsum("km,km->k", g, g), g @ y
    sy, syy = float(y.sum()), float(y @ y)

    def cost(a, d):
        return a * a * sgg + 2 * a * d * sg + m * d * d - 2 * a * sgy - 2 * d * sy + syy

    (a_lo, a_hi), (d_lo, d_hi) = a_box, d_box
    cands = []
    det = sgg * m - sg * sg
    with np.errstate(divide="ignore", invalid="ignore"):
        a_int = (sgy * m - sg * sy) / det
        d_int = (sgg * sy - sg * sgy) / det
    inside = (det > 1e-12 * sgg * m) & (a_int >= a_lo) & (a_int <= a_hi) & (d_int >= d_lo) & (d_int <= d_hi)
    a_int, d_int = np.where(inside, a_int, a_lo), np.where(inside, d_int, d_lo)
    cands.append((a_int, d_int))
    for d in (d_lo, d_hi):  # edges D = const: best A, clipped
        with np.errstate(divide="ignore", invalid="ignore"):
            a = np.clip((sgy - d * sg) / sgg, a_lo, a_hi)
        cands.append((a, np.full_like(a, d)))
    for a in (a_lo, a_hi):  # edges A = const: best D, clipped
        d = np.clip((sy - a * sg) / m, d_lo, d_hi)
        cands.append((np.full_like(d, a), d))
    best_a, best_d, best_c = cands[0][0], cands[0][1], cost(*cands[0])
    for a, d in cands[1:]:
        c = cost(a, d)
        better = c < best_c
        best_a, best_d, best_c = (np.where(better, a, best_a), np.where(better, d, best_d),
                                  np.where(better, c, best_c))
    return best_a, best_d, np.maximum(best_c, 0.0)


def _fit_core(n, v, y, box: dict[str, tuple[float, float]], n_ref: float,
              grid: int = 81, polish: int = 3) -> tuple[np.ndarray, float]:
    """Bounded least squares on p = (log A_ref, alpha, beta, D); returns (p, sum of squares).

    Step 1 (global, deterministic): an alpha x beta grid of `grid` x `grid` points
    spanning the box (denser near the lower bounds); at each, A and D are solved
    exactly (`_best_a_d`), so the grid profiles the full 4-constant problem over the
    two exponents. Step 2 (local): the `polish` best grid points that are local minima
    of the grid (separate basins) start `scipy.optimize.least_squares` (trust-region
    reflective, bounded) on all free constants; the lowest residual wins. Constants
    whose bounds coincide stay fixed.
    """
    from scipy.optimize import least_squares

    ln_n = np.log(n / n_ref)
    ln_v = np.log(v)
    lo = np.array([math.log(box["A"][0]), box["alpha"][0], box["beta"][0], box["D"][0]])
    hi = np.array([math.log(box["A"][1]), box["alpha"][1], box["beta"][1], box["D"][1]])
    free = hi > lo

    # quadratic spacing: dense near the lower bound, where fitted exponents usually sit
    # (the paper's are 0.077 and 0.015), coarse towards 2
    t = np.linspace(0.0, 1.0, grid) ** 2
    alphas = lo[1] + (hi[1] - lo[1]) * t if free[1] else lo[1:2]
    betas = lo[2] + (hi[2] - lo[2]) * t if free[2] else lo[2:3]
    g = np.exp(-(alphas[:, None, None] * ln_n + betas[None, :, None] * ln_v))
    a, d, c = _best_a_d(g.reshape(-1, len(y)), y, box["A"], box["D"])
    c = c.reshape(len(alphas), len(betas))

    # pick the best grid points that are local minima of the grid (separate basins),
    # falling back to the overall best
    padded = np.pad(c, 1, constant_values=np.inf)
    neigh = np.min([padded[1 + di:1 + di + c.shape[0], 1 + dj:1 + dj + c.shape[1]]
                    for di in (-1, 0, 1) for dj in (-1, 0, 1) if (di, dj) != (0, 0)], axis=0)
    minima = np.flatnonzero((c <= neigh).reshape(-1))
    order = minima[np.argsort(c.reshape(-1)[minima], kind="stable")][:max(polish, 1)]
    if order.size == 0:
        order = np.array([int(np.argmin(c))])

    def full(q: np.ndarray, base: np.ndarray) -> np.ndarray:
        p = base.copy()
        p[free] = q
        return p

    best_p, best_cost = None, math.inf
    for k in order:
        i, j = divmod(int(k), len(betas))
        p0 = np.array([math.log(a[k]), alphas[i], betas[j], d[k]])
        cost0 = float(c.reshape(-1)[k])
        if cost0 < best_cost:
            best_p, best_cost = p0, cost0
        if not np.any(free) or polish == 0:
            continue

        def residuals(q, base=p0):
            p = full(q, base)
            return np.exp(p[0] - p[1] * ln_n - p[2] * ln_v) + p[3] - y

        def jacobian(q, base=p0):
            p = full(q, base)
            t = np.exp(p[0] - p[1] * ln_n - p[2] * ln_v)
            return np.stack([t, -ln_n * t, -ln_v * t, np.ones_like(t)], axis=1)[:, free]

        span = (hi - lo)[free]
        q0 = np.clip(p0[free], lo[free] + 1e-10 * span, hi[free] - 1e-10 * span)
        res = least_squares(residuals, q0, jac=jacobian, bounds=(lo[free], hi[free]),
                            method="trf", ftol=1e-12, xtol=1e-12, gtol=1e-12, max_nfev=200)
        cost = float(2.0 * res.cost)
        if cost < best_cost:
            best_p, best_cost = full(res.x, p0), cost
    return best_p, best_cost


def _law_from(p: np.ndarray, cost: float, n_points: int, n_ref: float,
              box: dict[str, tuple[float, float]]) -> Law:
    log_a, alpha, beta, d = (float(x) for x in p)
    a_ref = math.exp(log_a)
    stuck = []
    for name, value in (("A", a_ref), ("alpha", alpha), ("beta", beta), ("D", d)):
        lo_b, hi_b = box[name]
        if lo_b == hi_b:
            continue  # held fixed, not "stuck"
        if name == "A":  # fitted in log: compare in log
            value, lo_b, hi_b = math.log(value), math.log(lo_b), math.log(hi_b)
        if any(abs(value - b) <= 1e-6 * max(1.0, abs(b)) for b in (lo_b, hi_b)):
            stuck.append(name)
    return Law(A=a_ref * n_ref ** alpha, alpha=alpha, beta=beta, D=d,
               rmse=math.sqrt(cost / n_points), n_points=n_points,
               A_ref=a_ref, n_ref=n_ref, at_bound=tuple(stuck))


def fit_law(N, V, Y, bounds: Mapping[str, tuple] | None = None, *, n_ref: float | None = None,
            grid: int = 81, polish: int = 3) -> Law:
    """Fit Y = A * N^-alpha * V^-beta + D to measured cells by bounded least squares.

    Why bounded: with a handful of LLM sizes the four constants are nearly degenerate
    (a small alpha with a large A and a small D fits about as well as the reverse), and
    an unbounded fit runs off along that valley: alpha -> large with D -> -inf, or A
    -> inf. The paper reports exactly this and used a bounded grid search. The box keeps
    the answer physical: A > 0, 0 <= alpha, beta <= 2, 0 <= D <= min(Y) (error can't
    fall below the irreducible part, which can't be above the best measured error).

    Why a grid and several starts: the objective is non-convex in (alpha, beta) but,
    for fixed exponents, linear in A and D. So a deterministic `grid` x `grid` sweep
    over (alpha, beta), with A and D solved exactly at each point, maps the whole box;
    the `polish` best separate grid minima then start a bounded least-squares refinement
    (in log A, so A stays positive and its scale is sane) and the lowest residual wins.
    The result is reproducible and does not hang on one lucky initialisation.

    `bounds` overrides entries of `DEFAULT_BOUNDS`: {"alpha": (0, 1), "D": (0, 0.2)};
    the A bounds apply to `A_ref` (N in multiples of `n_ref`). Equal lower and upper
    bounds hold a constant fixed (e.g. {"D": (0, 0)}). `n_ref` defaults to a power of
    ten near the geometric mean of N. Check `law.at_bound`: a constant on its bound is
    set by the box, not by the data.
    """
    n, v, y = _as_cells(N, V, Y)
    box = _resolve_bounds(bounds, y)
    n_free = sum(1 for name in PARAMS if box[name][1] > box[name][0])
    if len(y) < n_free + 1:
        raise ValueError(f"fit_law: {len(y)} points for {n_free} free constants; "
                         f"need at least {n_free + 1}")
    if grid < 2 or polish < 0:
        raise ValueError(f"need grid >= 2 and polish >= 0, got grid={grid}, polish={polish}")
    ref = _default_n_ref(n) if n_ref is None else float(n_ref)
    if not ref > 0:
        raise ValueError(f"n_ref must be positive, got {n_ref}")
    p, cost = _fit_core(n, v, y, box, ref, grid=grid, polish=polish)
    return _law_from(p, cost, len(y), ref, box)


def bootstrap(N, V, Y, n: int = 200, seed: int = 0, bounds: Mapping[str, tuple] | None = None, *,
              n_ref: float | None = None, grid: int = 41, polish: int = 1) -> dict:
    """Uncertainty of the constants from refits on grid cells resampled with replacement.

    Why over cells: each (N, V) cell is one trained model evaluated once, the unit that
    would come out differently if the study were rerun; resampling cells (rather than
    residuals) does not assume the law is the right shape, so misfit shows up as wider
    intervals. Why a bootstrap at all: the constants are strongly correlated (A with
    alpha, D with both) so the curvature of the residual at the optimum understates
    how loosely each one is pinned; refits show it directly, bounds included.

    Each refit is `fit_law`'s procedure with a coarser `grid` and fewer `polish`
    starts (for speed), under the same box and `n_ref` as the full fit (the D upper
    bound is min(Y) of the *full* data, so it does not move between resamples).
    Returns, for each of "A", "A_ref", "alpha", "beta", "D": {"mean", "std", "p2.5",
    "p97.5"} (percentile intervals), and under "meta": the full-data `Law`, n, seed and
    the n_ref used. A (units of N as given) and A_ref = A * n_ref**-alpha carry
    different shares of alpha's uncertainty; neither is "the" A without its unit.
    """
    cells_n, cells_v, cells_y = _as_cells(N, V, Y)
    if n < 2:
        raise ValueError(f"bootstrap: n must be >= 2 resamples, got {n}")
    box = _resolve_bounds(bounds, cells_y)
    full_law = fit_law(cells_n, cells_v, cells_y, box, n_ref=n_ref)
    ref = full_law.n_ref
    rng = np.random.default_rng(seed)
    m = len(cells_y)
    samples = {k: np.empty(n) for k in ("A", "A_ref", "alpha", "beta", "D")}
    for i in range(n):
        idx = rng.integers(0, m, size=m)
        p, cost = _fit_core(cells_n[idx], cells_v[idx], cells_y[idx], box, ref,
                            grid=grid, polish=polish)
        law = _law_from(p, cost, m, ref, box)
        for k in samples:
            samples[k][i] = getattr(law, k)
    out: dict[str, Any] = {}
    for k, s in samples.items():
        out[k] = {"mean": float(np.mean(s)), "std": float(np.std(s, ddof=1)),
                  "p2.5": float(np.percentile(s, 2.5)), "p97.5": float(np.percentile(s, 97.5))}
    out["meta"] = {"fit": full_law, "n": n, "seed": seed, "n_ref": ref}
    return out


def heldout_check(N, V, Y, held_out_mask, bounds: Mapping[str, tuple] | None = None, *,
                  n_ref: float | None = None) -> dict:
    """Fit on the cells outside `held_out_mask`, predict the held-out ones.

    A law that interpolates the grid it was fitted on can still extrapolate badly; the
    paper's use of it (choosing N and V for budgets not measured) is an extrapolation,
    so hold out e.g. the largest N and see whether its errors are predicted. Returns
    the fitted `Law` ("law"), per-held-out-cell "N", "V", "actual", "predicted", and
    "abs_mean", "abs_max", "rel_mean", "rel_max" (relative = |pred - actual| / |actual|;
    inf where actual == 0), "n_fit", "n_held".
    """
    n, v, y = _as_cells(N, V, Y)
    mask = np.asarray(held_out_mask)
    if mask.dtype != bool:
        raise ValueError(f"held_out_mask must be boolean, got dtype {mask.dtype}")
    mask = mask.reshape(-1)
    if len(mask) != len(y):
        raise ValueError(f"held_out_mask has {len(mask)} entries for {len(y)} cells")
    if not mask.any():
        raise ValueError("held_out_mask holds nothing out")
    if mask.all():
        raise ValueError("held_out_mask holds everything out; nothing left to fit")
    law = fit_law(n[~mask], v[~mask], y[~mask], bounds, n_ref=n_ref)
    pred = np.asarray(law.predict(n[mask], v[mask]), dtype=float).reshape(-1)
    actual = y[mask]
    abs_err = np.abs(pred - actual)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel_err = np.where(actual != 0, abs_err / np.abs(actual), np.inf)
    return {"law": law, "N": n[mask].tolist(), "V": v[mask].tolist(),
            "actual": actual.tolist(), "predicted": pred.tolist(),
            "abs_mean": float(abs_err.mean()), "abs_max": float(abs_err.max()),
            "rel_mean": float(rel_err.mean()), "rel_max": float(rel_err.max()),
            "n_fit": int((~mask).sum()), "n_held": int(mask.sum())}
