"""The sweep's code path on a tiny grid: every method runs, results and figures are
written, finished cells are skipped on a rerun, and a failing cell does not stop the rest."""

import json

import pytest
from tiny import tiny_cfg

import vocolab.studies.sweep as sweep_mod
from vocolab.reporting.sweep import pareto_front
from vocolab.studies.sweep import METHODS, plan, run_sweep


def tiny_overrides() -> dict:
    base = tiny_cfg()
    keys = ("data.image_size", "data.patch_size", "data.grid", "data.max_objects", "llm.hidden_size",
            "llm.layers", "llm.heads", "llm.kv_heads", "llm.intermediate_size", "llm.max_positions",
            "vision.hidden_size", "vision.heads", "vision.intermediate_size", "vision.text_hidden_size",
            "vision.projection_dim")
    out = {}
    for key in keys:
        section, name = key.split(".")
        out[key] = getattr(getattr(base, section), name)
    return out | {"data.train_scenes": 64, "data.heldout_scenes": 8, "train.batch_size": 8,
                  "train.clip_batch_size": 16, "train.clip_steps": 2, "train.pretrain_steps": 2,
                  "train.instruct_steps": 2}


def sweep(out, **kwargs):
    return run_sweep("nano", out, methods=METHODS, ks=(1, 2), steps=2, limit=12, overrides=tiny_overrides(),
                     progress=False, **kwargs)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    return out, sweep(out)


def test_every_method_and_k_gets_a_run_with_costs(finished):
    out, body = finished
    names = {r["name"] for r in body["runs"]}
    expected = {c.name for c in plan(METHODS, (1, 2), 16)} | {"upper", "lower", "blind"}
    assert names == expected
    for r in body["runs"]:
        assert 0.0 <= r["accuracy"] <= 1.0
        if r["name"] not in ("upper", "blind"):
            assert "retention" in r
        if r["name"] not in ("lower", "blind"):
            cost = r["cost"]
            assert cost["prefill_flops"] > 0 and cost["question_flops"] > 0
            # measured FLOPs of the real forward equal the analytic count of the same work
            assert cost["prefill_flops"] == pytest.approx(cost["prefill_flops_analytic"], rel=0.02), r["name"]
    by = {r["name"]: r for r in body["runs"]}
    assert by["voco-k1"]["cost"]["cache_bytes"] < by["avgpool-k1"]["cost"]["cache_bytes"] < \
        by["upper"]["cost"]["cache_bytes"]
    assert by["quecc-k1"]["cost"]["cache_bytes"] is None  # query-conditioned: nothing to cache
    assert by["avgpool-k1"]["cost"]["compressor_params"] > 0 and by["random-k1"]["cost"]["compressor_params"] == 0
    for name in ("results.json", "table.md", "retention_vs_tokens.png", "accuracy_vs_flops.png",
                 "family_heatmap.png"):
        assert (out / name).stat().st_size > 0
    assert "| voco | yes |" in (out / "table.md").read_text()


def test_a_rerun_skips_finished_cells(finished, monkeypatch):
    out, body = finished

    def never(self, cell):
        raise AssertionError(f"cell {cell.name} should have been skipped")

    monkeypatch.setattr(sweep_mod.Sweep, "run_cell", never)
    again = sweep(out)
    assert again["sweep"]["failed"] == []
    assert len(again["invocations"]) == len(body["invocations"]) + 1  # every invocation is on record
    assert again["invocations"][-1]["cells_run"] == 0 and body["invocations"][-1]["cells_run"] > 0
    assert [r["accuracy"] for r in again["runs"]] == [r["accuracy"] for r in body["runs"]]


def test_the_voco_cells_score_one_model_trained_once_drawing_every_k(finished, monkeypatch):
    import vocolab.training.recipe as recipe

    out, body = finished
    by = {r["name"]: r for r in body["runs"]}
    shared = body["sweep"]["voco_model"]
    assert shared["steps"] == 2 * 2 and shared["voco_ks"] == [1, 2] and shared["train_s"] > 0  # steps x Ks
    for k in (1, 2):
        assert by[f"voco-k{k}"]["train_steps"] == 4
        assert by[f"voco-k{k}"]["shared_model"] == {"trained_ks": [1, 2], "train_s": shared["train_s"]}
    assert by["avgpool-k1"]["train_steps"] == 2 and "shared_model" not in by["avgpool-k1"]

    def never(*args, **kwargs):
        raise AssertionError("the shared VoCo model should be loaded, not trained again")

    (out / "cells" / "voco-k2.json").unlink()  # a lost cell is scored again on the saved model
    monkeypatch.setattr(recipe, "fine_tune", never)
    again = {r["name"]: r for r in sweep(out)["runs"]}
    assert again["voco-k2"]["accuracy"] == by["voco-k2"]["accuracy"]
    assert again["voco-k2"]["shared_model"] == by["voco-k2"]["shared_model"]


def test_a_failing_cell_is_reported_and_the_rest_go_on(tmp_path, monkeypatch):
    real = sweep_mod.Sweep.run_cell

    def flaky(self, cell):
        if cell.name == "avgpool-k2":
            raise RuntimeError("boom")
        return real(self, cell)

    monkeypatch.setattr(sweep_mod.Sweep, "run_cell", flaky)
    body = run_sweep("nano", tmp_path, methods=("avgpool", "random"), ks=(1, 2), steps=1, limit=6,
                     overrides=tiny_overrides(), progress=False)
    assert body["sweep"]["failed"] == ["avgpool-k2"]
    assert "boom" in json.loads((tmp_path / "cells" / "avgpool-k2.failed.json").read_text())["error"]
    assert {"avgpool-k1", "random-k1", "random-k2"} <= {r["name"] for r in body["runs"]}


def test_plan_rejects_bad_cells():
    with pytest.raises(ValueError, match="not registered"):
        plan(("nope",), (1,), 16)
    with pytest.raises(ValueError, match="outside"):
        plan(("voco",), (16,), 16)
    assert [c.name for c in plan(("prumerge", "voco"), (1, 4), 16)] == ["prumerge", "voco-k1", "voco-k4"]


def test_pareto_front():
    points = [(1, 0.2), (2, 0.1), (3, 0.5), (4, 0.4), (5, 0.6)]
    assert pareto_front(points) == [0, 2, 4]
