"""The scaling-law numerics (`vocolab.scaling_fit`) on synthetic grids with known answers."""

import math

import numpy as np
import pytest

from vocolab.evaluation.scaling_budget import frontier, inference_flops, optimal_allocation, optimal_tokens
from vocolab.evaluation.scaling_law import Law, bootstrap, fit_law, heldout_check

TRUE = {"A": 3.0, "alpha": 0.08, "beta": 0.02, "D": 0.1}
N_GRID = [1e6, 2e6, 4e6, 8e6]
V_GRID = [1, 4, 16, 64]


def _cells(noise=0.0, seed=0, true=TRUE):
    """The 4 x 4 (N, V) grid with Y from the law (raw N units) plus seeded Gaussian noise."""
    n, v = (a.reshape(-1) for a in np.meshgrid(N_GRID, V_GRID, indexing="ij"))
    y = true["A"] * n ** -true["alpha"] * v ** -true["beta"] + true["D"]
    y = y + np.random.default_rng(seed).normal(0.0, noise, y.size)
    return n.astype(float), v.astype(float), y


def _law(alpha, beta, A=1.0, D=0.1, n_ref=1e6):
    return Law(A=A * n_ref ** alpha, alpha=alpha, beta=beta, D=D, rmse=0.0, n_points=16,
               A_ref=A, n_ref=n_ref)


# --------------------------------------------------------------------------- fit_law

@pytest.mark.parametrize("true", [TRUE, {"A": 2.5, "alpha": 0.0773, "beta": 0.0151, "D": 0.03}],
                         ids=["brief", "paper-like-off-grid"])
def test_fit_recovers_constants_exactly_without_noise(true):
    law = fit_law(*_cells(true=true))
    assert law.alpha == pytest.approx(true["alpha"], abs=1e-6)
    assert law.beta == pytest.approx(true["beta"], abs=1e-6)
    assert law.A == pytest.approx(true["A"], rel=1e-5)
    assert law.D == pytest.approx(true["D"], abs=1e-5)
    assert law.rmse < 1e-8 and law.n_points == 16 and law.at_bound == ()


def test_fit_recovers_constants_with_small_noise():
    n, v, y = _cells(noise=5e-4, seed=0)
    law = fit_law(n, v, y)
    # With N spanning only 8x, D trades off against A and alpha: it is the loosest
    # constant (see the bootstrap test); the exponents and A are pinned much better.
    assert law.alpha == pytest.approx(0.08, abs=0.01)
    assert law.beta == pytest.approx(0.02, abs=0.003)
    assert law.A == pytest.approx(3.0, rel=0.03)
    assert law.D == pytest.approx(0.1, abs=0.06)
    assert law.rmse < 1e-3  # about the noise level, sigma = 5e-4
    assert np.max(np.abs(law.predict(n, v) - y)) < 3e-3


def test_units_A_raw_and_A_ref_agree():
    n, v, y = _cells(noise=5e-4)
    law = fit_law(n, v, y, n_ref=1e6)
    assert law.n_ref == 1e6
    raw = law.A * n ** -law.alpha * v ** -law.beta + law.D
    np.testing.assert_allclose(law.predict(n, v), raw, rtol=1e-10)
    # the paper quotes A for N in billions
    a_b = law.A_for_unit(1e9)
    np.testing.assert_allclose(a_b * (n / 1e9) ** -law.alpha * v ** -law.beta + law.D, raw, rtol=1e-10)
    # the fitted law does not depend on the normalisation chosen
    other = fit_law(n, v, y, n_ref=1e9)
    assert other.A == pytest.approx(law.A, rel=1e-4)
    assert other.alpha == pytest.approx(law.alpha, abs=1e-5)


def test_fit_is_deterministic():
    cells = _cells(noise=5e-4)
    assert fit_law(*cells) == fit_law(*cells)


def test_bounded_fit_stays_in_box_on_pure_noise():
    from scipy.optimize import least_squares

    n, v, _ = _cells()
    y = np.random.default_rng(1).uniform(0.3, 0.7, n.size)  # no law at all
    ln = np.log(n / 1e6)

    # An unbounded fit of the same model leaves the physical region (negative
    # exponents, D < 0 or > min Y, or A blowing up): the case the bounds exist for.
    def res(p):
        return p[0] * np.exp(-p[1] * ln) * v ** -p[2] + p[3] - y

    free_fit = least_squares(res, [0.5, 0.1, 0.1, 0.1], method="lm").x
    inside = (free_fit[0] > 0 and 0 <= free_fit[1] <= 2 and 0 <= free_fit[2] <= 2
              and 0 <= free_fit[3] <= y.min())
    assert not inside, free_fit

    law = fit_law(n, v, y)
    assert law.A_ref > 0 and law.A > 0
    assert 0 <= law.alpha <= 2 and 0 <= law.beta <= 2
    assert 0 <= law.D <= y.min() + 1e-12
    assert law.at_bound  # the data do not determine the constants, and it says so

    tight = fit_law(n, v, y, bounds={"alpha": (0.0, 0.5), "beta": (0.0, 0.1), "D": (0.0, 0.2),
                                     "A": (1e-3, 10.0)})
    assert 0 <= tight.alpha <= 0.5 and 0 <= tight.beta <= 0.1 and 0 <= tight.D <= 0.2
    assert 1e-3 <= tight.A_ref <= 10.0


def test_bounded_fit_on_wrong_sign_data_pins_exponent_at_zero():
    # error *rising* with N: an unbounded fit would take alpha < 0
    n, v, _ = _cells()
    y = 0.2 + 0.05 * np.log(n / 1e6) + 0.01 * np.random.default_rng(2).normal(size=n.size)
    law = fit_law(n, v, y)
    assert law.alpha == pytest.approx(0.0, abs=1e-9)
    assert "alpha" in law.at_bound


def test_equal_bounds_hold_a_constant_fixed():
    n, v, y = _cells(noise=5e-4)
    law = fit_law(n, v, y, bounds={"D": (0.1, 0.1)})
    assert law.D == 0.1
    assert law.alpha == pytest.approx(0.08, abs=0.005)
    # three free constants: four points are enough
    fit_law(n[:4], v[:4], y[:4], bounds={"D": (0.1, 0.1)})


# --------------------------------------------------------------------------- bootstrap

def test_bootstrap_intervals_contain_true_constants():
    n, v, y = _cells(noise=5e-4, seed=0)
    boot = bootstrap(n, v, y, n=100, seed=0)
    for name, true in TRUE.items():
        s = boot[name]
        assert s["p2.5"] <= true <= s["p97.5"], (name, s)
        assert s["std"] > 0 and s["p2.5"] <= s["mean"] <= s["p97.5"]
    # intervals are informative, not the whole box
    assert boot["alpha"]["p97.5"] - boot["alpha"]["p2.5"] < 0.05
    assert boot["beta"]["p97.5"] - boot["beta"]["p2.5"] < 0.01
    assert boot["meta"]["n"] == 100 and boot["meta"]["n_ref"] == 1e6
    assert isinstance(boot["meta"]["fit"], Law)
    # seeded: same answer twice, different answer with another seed
    assert bootstrap(n, v, y, n=20, seed=3)["alpha"] == bootstrap(n, v, y, n=20, seed=3)["alpha"]
    assert bootstrap(n, v, y, n=20, seed=3)["alpha"] != bootstrap(n, v, y, n=20, seed=4)["alpha"]


# --------------------------------------------------------------------------- heldout_check

def test_heldout_largest_model_is_predicted():
    n, v, y = _cells(noise=5e-4)
    held = n == 8e6  # extrapolate to the largest LLM
    out = heldout_check(n, v, y, held)
    assert out["n_held"] == 4 and out["n_fit"] == 12 and out["law"].n_points == 12
    assert out["abs_max"] < 5e-3 and out["rel_max"] < 0.01
    assert out["abs_mean"] <= out["abs_max"] and out["rel_mean"] <= out["rel_max"]
    assert out["N"] == [8e6] * 4 and out["V"] == V_GRID


def test_heldout_flags_a_wrong_law():
    # the held-out cells do not follow the law: the check must show a large error
    n, v, y = _cells(noise=5e-4)
    y = y.copy()
    held = n == 8e6
    y[held] += 0.2
    out = heldout_check(n, v, y, held)
    assert out["abs_mean"] > 0.15


def test_heldout_bad_masks():
    n, v, y = _cells()
    with pytest.raises(ValueError, match="boolean"):
        heldout_check(n, v, y, np.zeros(16, dtype=int))
    with pytest.raises(ValueError, match="entries"):
        heldout_check(n, v, y, np.zeros(15, dtype=bool))
    with pytest.raises(ValueError, match="nothing out"):
        heldout_check(n, v, y, np.zeros(16, dtype=bool))
    with pytest.raises(ValueError, match="everything"):
        heldout_check(n, v, y, np.ones(16, dtype=bool))
    with pytest.raises(ValueError, match="points"):  # 4 cells left for 4 constants
        heldout_check(n, v, y, np.arange(16) >= 4)


# --------------------------------------------------------------------------- FLOPs

def test_inference_flops_arithmetic():
    assert inference_flops(1e9, 50, 1) == 2 * 1e9 * 51
    assert inference_flops(7e9, 0, 576) == 2 * 7e9 * 576
    assert isinstance(inference_flops(2, 3, 4), float) and inference_flops(2, 3, 4) == 28.0
    np.testing.assert_array_equal(inference_flops(np.array([1.0, 2.0]), 10, np.array([1.0, 6.0])),
                                  [22.0, 64.0])
    for bad in [(0, 1, 1), (-1, 1, 1), (1, -1, 1), (1, 1, -1), (math.nan, 1, 1)]:
        with pytest.raises(ValueError):
            inference_flops(*bad)


# --------------------------------------------------------------------------- allocation

def test_optimal_tokens_closed_form():
    law = _law(alpha=0.08, beta=0.02)
    assert optimal_tokens(law, 0) == 1.0  # cached text: one token
    assert optimal_tokens(law, 60) == pytest.approx(0.02 * 60 / 0.06)  # = 20
    assert optimal_tokens(law, 60, V_max=8) == 8.0
    # agrees with a brute-force search over V with N = C / (2 (Q + V)) spending the budget
    C, Q = 1e12, 60
    vs = np.linspace(1, 200, 200_001)
    err = law.predict(C / (2 * (Q + vs)), vs)
    assert vs[np.argmin(err)] == pytest.approx(20.0, abs=1e-2)
    with pytest.raises(ValueError):
        optimal_tokens(_law(alpha=0.01, beta=0.05), 50)  # V grows without limit: need V_max


def test_allocation_prefers_large_llm_and_one_token_when_beta_small():
    law = _law(alpha=0.08, beta=0.005)  # beta << alpha: the paper's visual-reasoning regime
    Ns, Vs = [1e6, 2e6, 4e6, 8e6], [1, 4, 16, 64, 144]
    for Q in (0, 50):
        budgets = [1.5 * inference_flops(n, Q, 1) for n in Ns]  # each N fits only with few tokens
        rows = optimal_allocation(law, budgets, Q, Ns, Vs)
        assert [r["N"] for r in rows] == Ns  # the largest LLM that fits
        for r in rows:
            assert r["feasible"] and r["flops"] <= r["budget"]
            assert r["flops"] == inference_flops(r["N"], Q, r["V"])
            assert r["error"] == pytest.approx(law.predict(r["N"], r["V"]))
        if Q == 0:
            assert all(r["V"] == 1 for r in rows)
    # a budget large enough for the biggest LLM with all tokens takes all tokens
    (big,) = optimal_allocation(law, [inference_flops(8e6, 0, 144)], 0, Ns, Vs)
    assert (big["N"], big["V"]) == (8e6, 144)
    # with cached text and a budget that buys 8e6 x 1 token or 1e6 x 8 tokens, N wins
    (r,) = optimal_allocation(law, [inference_flops(8e6, 0, 1)], 0, Ns, [1, 8])
    assert (r["N"], r["V"]) == (8e6, 1)


def test_allocation_reverses_when_tokens_matter_more():
    law = _law(alpha=0.005, beta=0.08)  # OCR-like: tokens matter more than parameters
    (r,) = optimal_allocation(law, [inference_flops(8e6, 0, 1)], 0, [1e6, 8e6], [1, 8])
    assert (r["N"], r["V"]) == (1e6, 8)


def test_allocation_budget_respected_and_infeasible_rows():
    law = _law(alpha=0.08, beta=0.02)
    Ns, Vs = [1e6, 4e6], [1, 16, 64]
    budgets = [1.0, 2e8, 3e9]
    rows = optimal_allocation(law, budgets, (50, 0), Ns, Vs, continuous=True)
    assert [(r["Q"], r["budget"]) for r in rows] == [(q, b) for q in (50.0, 0.0) for b in budgets]
    infeasible = [r for r in rows if r["budget"] == 1.0]  # one FLOP buys nothing, for either Q
    assert len(infeasible) == 2
    for r in infeasible:
        assert r["feasible"] is False and r["N"] is None and r["continuous"] is None
    rows = [r for r in rows if r["budget"] > 1.0]
    for r in rows:
        assert r["feasible"] and r["flops"] <= r["budget"]
        c = r["continuous"]
        assert 1 <= c["V"] <= 64 and c["flops"] <= r["budget"] * (1 + 1e-9)
        assert c["error"] <= r["error"] + 1e-12  # continuous V can only do as well or better
    # brute force over all feasible grid cells for every row
    for r in rows:
        best = min(law.predict(n, v) for n in Ns for v in Vs
                   if inference_flops(n, r["Q"], v) <= r["budget"])
        assert r["error"] == pytest.approx(best)


def test_allocation_bad_inputs():
    law = _law(0.08, 0.02)
    with pytest.raises(ValueError):
        optimal_allocation(law, [], 0, [1e6], [1])
    with pytest.raises(ValueError):
        optimal_allocation(law, [-1.0], 0, [1e6], [1])
    with pytest.raises(ValueError):
        optimal_allocation(law, [1e9], -5, [1e6], [1])
    with pytest.raises(ValueError):
        optimal_allocation(law, [1e9], 0, [0.0], [1])
    with pytest.raises(ValueError):
        optimal_allocation(law, [1e9], 0, [1e6], [])


# --------------------------------------------------------------------------- frontier

def test_frontier_handmade():
    pts = [(1, 0.5), (2, 0.4), (2, 0.45), (3, 0.42), (4, 0.3), (0.5, 0.9), (4, 0.3), (5, 0.3)]
    assert frontier(pts) == [(0.5, 0.9), (1, 0.5), (2, 0.4), (4, 0.3)]
    # mappings keep their extra fields; order of input does not matter
    dicts = [{"flops": f, "error": e, "tag": i} for i, (f, e) in enumerate(pts)]
    front = frontier(reversed(dicts))
    assert [d["tag"] for d in front] == [5, 0, 1, 6]  # of the (4, 0.3) twins, the one seen first
    assert frontier([]) == []
    with pytest.raises(ValueError):
        frontier([(1, math.nan)])
    with pytest.raises(ValueError):
        frontier([{"flops": 1}])


# --------------------------------------------------------------------------- bad inputs

def test_fit_bad_inputs():
    n, v, y = _cells()
    with pytest.raises(ValueError, match="same length"):
        fit_law(n, v[:-1], y)
    with pytest.raises(ValueError, match="N"):
        fit_law(np.where(n == 1e6, 0.0, n), v, y)
    with pytest.raises(ValueError, match="V"):
        fit_law(n, np.where(v == 1, -1.0, v), y)
    with pytest.raises(ValueError, match="non-finite"):
        fit_law(n, v, np.where(v == 1, np.nan, y))
    with pytest.raises(ValueError, match="at least 5"):
        fit_law(n[:4], v[:4], y[:4])
    with pytest.raises(ValueError, match="lo <= hi"):
        fit_law(n, v, y, bounds={"alpha": (1.0, 0.5)})
    with pytest.raises(ValueError, match="unknown"):
        fit_law(n, v, y, bounds={"gamma": (0, 1)})
    with pytest.raises(ValueError):
        bootstrap(n, v, y, n=1)
