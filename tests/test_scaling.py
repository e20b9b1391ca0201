"""The scaling grid on a tiny config (two tiny LLM sizes, two K values, two steps): every
cell runs, files are written, a rerun trains nothing, the fit is bounded; and the analysis
on a synthetic grid with a known law recovers it and picks the paper's optimum."""

import json
import math

import pytest
from data_helpers import forbid_reruns
from test_sweep import tiny_overrides

from vocolab.cli import build_parser
from vocolab.evaluation.scaling_analysis import analyse
from vocolab.studies.scaling import LLMSize, plan, run_scaling, with_flops

TINY_SIZES = (LLMSize(16, 1, 2, 32), LLMSize(32, 2, 2, 64))
KS = (1, 4)
V = 16  # tiny images: 16 px, 4 px patches


def scaling(out, **kwargs):
    return run_scaling("nano", out, sizes=TINY_SIZES, methods=("voco", "quecc"), ks=KS, steps=2, limit=12, n_boot=20,
                       overrides=tiny_overrides(), progress=False, **kwargs)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("scaling")
    return out, scaling(out)


def test_every_cell_runs_with_params_flops_and_files(finished):
    out, body = finished
    names = {r["name"] for r in body["runs"]}
    expected = {f"{s.name}-{m}-k{k}" for s in TINY_SIZES for m in ("voco", "quecc") for k in KS}
    assert names == expected | {f"{s.name}-upper" for s in TINY_SIZES} | {"blind"}
    q = body["scaling"]["question_tokens"]
    assert q > 1
    params = {}
    for r in body["runs"]:
        if r["name"] == "blind":
            continue
        assert 0.0 <= r["accuracy"] <= 1.0 and r["error"] == pytest.approx(1.0 - r["accuracy"])
        assert r["tokens"] == (V if r["method"] == "full" else int(r["name"].rsplit("-k", 1)[1]))
        assert r["flops_per_question"] == pytest.approx(2 * r["llm_params"] * (q + r["tokens"]))
        assert r["flops_per_question_cached"] == pytest.approx(2 * r["llm_params"] * r["tokens"])
        assert r["measured_flops"] > 0 and r["question_flops"] > 0
        # QueCC: one 2-step model per K; VoCo: one model per size drawing every K, 2 steps per K
        assert r["train_steps"] == {"full": 0, "quecc": 2, "voco": 2 * len(KS)}[r["method"]]
        params.setdefault(r["size"], set()).add(r["llm_params"])
    # one N per size (compressors are not LLM parameters), and the larger size is larger
    assert all(len(p) == 1 for p in params.values())
    small, large = (params[s.name].pop() for s in TINY_SIZES)
    assert large > 3 * small
    sizes = {s["name"]: s for s in body["scaling"]["sizes"]}
    assert sizes["h16-l1"]["llm_params"] == small and sizes["h16-l1"]["init_std"] > sizes["h32-l2"]["init_std"]
    for name in ("results.json", "table.md", "error_vs_flops.png", "fit_residuals.png"):
        assert (out / name).stat().st_size > 0
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["provenance"]["command"] == "vocolab scaling"
    assert {"fit", "optimal", "frontier", "scaling"} <= set(on_disk)
    table = (out / "table.md").read_text()
    assert "| h32-l2 |" in table and "| paper |" in table and "| cached |" in table


def test_the_fit_is_bounded_with_intervals_and_heldout_checks(finished):
    _, body = finished
    fit = body["fit"]
    assert fit["primary"] == "voco" and set(fit["laws"]) == {"voco", "quecc"}
    voco = fit["laws"]["voco"]
    assert voco["cells"] == len(TINY_SIZES) * (len(KS) + 1)  # K < V cells + each size's upper bound
    law = voco["law"]
    errors = [r["error"] for r in body["runs"] if r.get("method") in ("voco", "full")]
    assert 0.0 <= law["alpha"] <= 2.0 and 0.0 <= law["beta"] <= 2.0 and law["A_ref"] > 0
    assert 0.0 <= law["D"] <= min(errors) + 1e-12
    assert math.isfinite(law["rmse"])
    for name in ("A_ref", "alpha", "beta", "D"):
        b = voco["bootstrap"][name]
        assert b["p2.5"] <= b["p97.5"]
    assert voco["bootstrap"]["n"] == 20
    # two sizes: dropping the largest leaves one size, too few to fit; a random 20% is checkable
    assert "skipped" in voco["heldout"]["largest_n"]
    check = voco["heldout"]["random_20pct"]
    assert check["n_held"] == 1 and check["n_fit"] == 5 and len(check["predicted"]) == 1
    opt = body["optimal"]
    assert opt["method"] == "voco" and {r["text"] for r in opt["rows"]} == {"questions", "paper", "cached"}
    for r in opt["rows"]:
        if r["feasible"]:
            assert r["flops"] <= r["budget"] * (1 + 1e-9) and r["N"] in opt["N_choices"]
    assert set(body["frontier"]) == {"questions", "cached"} and body["frontier"]["cached"]


def test_a_rerun_trains_nothing(finished, monkeypatch):
    out, body = finished
    calls = forbid_reruns(monkeypatch, "vocolab.studies.scaling.run_cells")

    def never(*args, **kwargs):
        raise AssertionError("a stage was retrained: the shared CLIP and upper-bound models must be reused")

    monkeypatch.setattr("vocolab.training.recipe.vlm_stage", never)
    monkeypatch.setattr("vocolab.training.recipe.clip_stage", never)
    again = scaling(out)
    assert len(calls) == len(TINY_SIZES) * (1 + 2 * len(KS)) and again["scaling"]["failed"] == []
    key = lambda b: sorted((r["name"], r["accuracy"]) for r in b["runs"])  # noqa: E731
    assert key(again) == key(body)


def test_plan_rejects_bad_grids():
    with pytest.raises(ValueError, match="outside"):
        plan(TINY_SIZES, ("voco",), (16,), 16)
    with pytest.raises(ValueError, match="differ"):
        plan((LLMSize(16, 1, 2, 32), LLMSize(16, 1, 4, 64)), ("voco",), (1,), 16)
    with pytest.raises(ValueError, match="unknown or untrained"):
        plan(TINY_SIZES, ("fastv",), (1,), 16)
    cells = plan([(16, 1, 2, 32)], ("voco", "quecc"), (1, 2), 16)
    assert [(s.name, c and c.name) for s, c in cells] == [
        ("h16-l1", None), ("h16-l1", "voco-k1"), ("h16-l1", "voco-k2"), ("h16-l1", "quecc-k1"),
        ("h16-l1", "quecc-k2")]


def _synthetic_runs(alpha, beta, A=0.5, D=0.05, q=10.0):
    """A 4 x 5 grid whose errors follow a known law exactly (N in raw parameters)."""
    runs = []
    for i, n in enumerate((1e5, 3e5, 1e6, 3e6)):
        for v in (1, 2, 4, 16, 64):
            err = A * (n / 1e6) ** -alpha * v ** -beta + D
            method = "full" if v == 64 else "voco"
            run = {"name": f"s{i}-{method}-k{v}", "method": method, "tokens": v, "accuracy": 1 - err,
                   "size": f"s{i}", "llm_params": int(n), "cost": {}}
            runs.append(with_flops(run, q))
    return runs


def test_analysis_recovers_a_known_law_and_the_papers_optimum():
    runs = _synthetic_runs(alpha=0.3, beta=0.05)
    out = analyse(runs, 10.0, 64, ("voco",), n_boot=10, seed=0)
    law = out["fit"]["laws"]["voco"]["law"]
    assert law["alpha"] == pytest.approx(0.3, abs=2e-3) and law["beta"] == pytest.approx(0.05, abs=2e-3)
    assert law["rmse"] < 1e-6
    held = out["fit"]["laws"]["voco"]["heldout"]["largest_n"]
    assert held["n_held"] == 5 and held["abs_max"] < 1e-4  # exact law: extrapolation in N is exact
    # with cached text (Q = 0) and alpha >> beta: always the largest LLM that fits the budget
    # with one visual token (only budget left over beyond that LLM buys tokens)
    cached = [r for r in out["optimal"]["rows"] if r["text"] == "cached" and r["feasible"]]
    assert len(cached) == 5
    for r in cached:
        assert r["N"] == max(n for n in out["optimal"]["N_choices"] if 2 * n * 1 <= r["budget"])
    assert any(r["V"] == 1 and r["N"] < max(out["optimal"]["N_choices"]) for r in cached)
    assert out["fit"]["laws"]["voco"]["optimal_tokens"]["Q=0"] == 1.0
    # beta > alpha reverses it: more tokens pay (the paper's OCR-like regime)
    flipped = analyse(_synthetic_runs(alpha=0.02, beta=0.3), 10.0, 64, ("voco",), n_boot=10)
    rows = [r for r in flipped["optimal"]["rows"] if r["text"] == "cached" and r["feasible"]]
    assert any(r["V"] > 1 and r["N"] < max(n for n in flipped["optimal"]["N_choices"] if 2 * n <= r["budget"])
               for r in rows)
    # too few cells: the fit is skipped with a reason instead of a meaningless answer
    few = analyse(runs[:3], 10.0, 64, ("voco",), n_boot=10)
    assert "skipped" in few["fit"]["laws"]["voco"] and few["optimal"] is None


def test_cli_has_a_scaling_subcommand():
    args = build_parser().parse_args(["scaling", "--steps", "3", "--limit", "10", "--ks", "1", "4",
                                      "--set", "train.batch_size=8"])
    assert (args.command, args.steps, args.limit, args.ks, args.out) == ("scaling", 3, 10, [1, 4], "figures/scaling")
    assert args.set == ["train.batch_size=8"] and args.bootstrap == 200
