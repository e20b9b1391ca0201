"""The distillation study on a tiny grid: every objective trains from the same base model,
is evaluated with retention, and a rerun skips finished runs."""

import pytest
from data_helpers import forbid_reruns
from test_sweep import tiny_overrides

from vocolab.studies.distill import run_distill_study
from vocolab.training.distill import OBJECTIVES


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("distill")
    body = run_distill_study("nano", out, ks=(1,), steps=2, limit=12, overrides=tiny_overrides(), progress=False)
    return out, body


def test_every_objective_is_trained_and_scored(study):
    out, body = study
    runs = {r["name"]: r for r in body["runs"]}
    assert {f"{o}-k1" for o in OBJECTIVES} | {"upper", "lower", "blind"} == set(runs)
    for o in OBJECTIVES:
        r = runs[f"{o}-k1"]
        assert r["objective"] == o and r["train_steps"] == 2 and r["mask"] == "voco" and "retention" in r
        assert set(r["per_family"]) == set(body["eval"]["families"])
    for name in ("results.json", "table.md", "objectives.png"):
        assert (out / name).stat().st_size > 0
    assert "| logits+attention | 1 |" in (out / "table.md").read_text()


def test_rerun_skips_finished_objectives(study, monkeypatch):
    out, body = study
    calls = forbid_reruns(monkeypatch, "vocolab.studies.distill.run_cells")
    again = run_distill_study("nano", out, ks=(1,), steps=2, limit=12, overrides=tiny_overrides(), progress=False)
    assert len(calls) == len(OBJECTIVES) and again["distill"]["failed"] == []


def test_unknown_objective_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown objective"):
        run_distill_study("nano", tmp_path, objectives=("nope",), overrides=tiny_overrides(), progress=False)
