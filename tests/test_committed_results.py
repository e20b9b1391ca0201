"""The committed results files still load and render with today's code: every table and
figure in `figures/` is redrawn from its `results.json` by the reporting functions, so a
change to those functions must not strand a committed result."""

import json
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from vocolab.evaluation.metrics import retention
from vocolab.reporting import (
    distill_markdown,
    mod_markdown,
    plot_accuracy_vs_flops,
    plot_accuracy_vs_frames,
    plot_distill,
    plot_error_vs_flops,
    plot_family_heatmap,
    plot_fit_residuals,
    plot_mod,
    plot_retention_vs_tokens,
    plot_temporal_families,
    scaling_markdown,
    sweep_markdown,
    table1_markdown,
    temporal_markdown,
)

FIGURES = Path(__file__).resolve().parents[1] / "figures"
PROVENANCE_KEYS = {"command", "commit", "preset", "seed", "device", "versions", "wall_s"}
REPORTS = {
    "sweep": (sweep_markdown, (plot_retention_vs_tokens, plot_accuracy_vs_flops, plot_family_heatmap)),
    "distill": (distill_markdown, (plot_distill,)),
    "temporal": (temporal_markdown, (plot_accuracy_vs_frames, plot_temporal_families)),
    "temporal-jitter": (temporal_markdown, (plot_accuracy_vs_frames, plot_temporal_families)),
    "temporal-off-lattice": (temporal_markdown, (plot_accuracy_vs_frames, plot_temporal_families)),
    "mod": (mod_markdown, (plot_mod,)),
    "scaling": (scaling_markdown, (plot_error_vs_flops, plot_fit_residuals)),
}


# committed quickstart folders; those whose second-cycle decisions the retry-rule test checks, and the rest
RETRY_RULE_QUICKSTARTS = ["quickstart", "quickstart-seeds/seed1", "quickstart-seeds/seed2",
                          "quickstart-amd-epyc/seed0", "quickstart-amd-epyc/seed1", "quickstart-amd-epyc/seed2",
                          "axis-question/seed0", "axis-question/seed1", "axis-question/seed2",
                          "axis-question/seed0-uninterrupted", "quickstart-avx512/seed0", "quickstart-avx512/seed1",
                          "quickstart-avx512/seed2", "quickstart-retries/seed2-avx2",
                          "quickstart-voco-retries/seed2-avx2", "quickstart-voco-retries/seed2-avx512"]
EARLIER_QUICKSTARTS = ["quickstart-seed1", "quickstart-sincos-seed0", "quickstart-sincos-seed1",
                       "quickstart-sincos-seed2", "quickstart-voco2100/seed0", "quickstart-voco2100/seed1",
                       "quickstart-voco2100/seed2", "quickstart-10min/seed0"]


def _kernels(body: dict) -> str | None:
    """torch's CPU vector level a run recorded (None: made before results files recorded it)."""
    return body["provenance"].get("cpu_kernels", {}).get("capability")


def _body(folder: str) -> dict:
    path = FIGURES / folder / "results.json"
    if not path.exists():
        pytest.skip(f"{path} is not committed")
    body = json.loads(path.read_text())
    assert PROVENANCE_KEYS <= set(body["provenance"]) and body["runs"]
    return body


@pytest.mark.parametrize("study", sorted(REPORTS))
def test_a_committed_study_renders_its_table_and_figures(study):
    body = _body(study)
    table, figures = REPORTS[study]
    assert table(body).count("|") > 10
    for draw in figures:
        plt.close(draw(body))


@pytest.mark.parametrize("folder", [*EARLIER_QUICKSTARTS, *RETRY_RULE_QUICKSTARTS])
def test_a_committed_quickstart_renders_table_1(folder):
    body = _body(folder)
    rendered = table1_markdown(body["runs"], body["eval"]["families"])
    assert {r["name"] for r in body["runs"]} >= {"upper", "lower", "blind"}
    assert all(f"| {r['name']} |" in rendered for r in body["runs"])


@pytest.mark.parametrize("folder", RETRY_RULE_QUICKSTARTS)
def test_a_committed_quickstart_ran_second_cycles_only_when_validation_asked(folder):
    body = _body(folder)
    seen, train = body.get("validation", body.get("upper_validation")), body["config"]["train"]
    if seen is None:  # made before the rule (f6ab35b): no check, no second cycle
        assert "upper-retry" not in body["stage_seconds"]
        return
    checks = [name for name in seen if name.split("-retry")[0] == "upper"]  # upper, upper-retry, upper-retry2
    below = [seen[name] < train["instruct_retry_below"] for name in checks]
    # every check but the last asked for another cycle; the last passed, or the cap was reached (1 before the field)
    assert all(below[:-1]) and (not below[-1] or len(checks) == 1 + train.get("instruct_retries", 1))
    assert [name for name in body["stage_seconds"] if name.startswith("upper-retry")] == checks[1:]
    if "voco" in seen:  # made with the voco stage's check: retention on validation, the same rule
        cycles = [name for name in seen if name.split("-retry")[0] == "voco"]  # voco, voco-retry, voco-retry2
        kept = [retention(seen[name], seen["lower"], seen[checks[-1]]) for name in cycles]
        below = [figure is not None and figure < train["voco_retry_below"] for figure in kept]
        assert all(below[:-1]) and (not below[-1] or len(cycles) == 1 + train.get("voco_retries", 1))
        assert [name for name in body["stage_seconds"] if name.startswith("voco-retry")] == cycles[1:]


@pytest.mark.parametrize("folder", ["shipped-nano", "amd-epyc-seed0", "amd-epyc-seed1", "amd-epyc-seed2",
                                    "amd-epyc-seed0-axis", "amd-epyc-seed1-axis", "amd-epyc-seed2-axis",
                                    "avx512-seed0-axis"])
def test_a_committed_spatial_confusion_agrees_with_its_accuracy(folder):
    """RESULTS.md's axis/order table: each run's confusion counts give its `spatial`
    accuracy and its stored axis/order split."""
    from vocolab.evaluation.confusion import SPATIAL_AXES, grouped_accuracy

    body = _body(f"spatial-confusion/{folder}")
    counted = [r for r in body["runs"] if "confusion" in r]
    assert {r["name"] for r in counted} == {"upper", "lower", "voco-k1"}
    for run in counted:
        conf = run["confusion"]["spatial"]
        counts = conf["counts"]
        right = sum(counts[i][i] for i in range(len(counts)))
        assert right / sum(map(sum, counts)) == pytest.approx(run["per_family"]["spatial"])
        assert grouped_accuracy(conf, SPATIAL_AXES) == conf["groups"]
    assert (FIGURES / "spatial-confusion" / folder / "confusion_spatial.png").exists()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_an_axis_question_run_differs_from_its_recipe_run_in_training_data_only(seed):
    """RESULTS.md's axis-question table sets each run beside the recipe's run of the same seed
    on the same processor: same held-out task and config but for the training-only family."""
    axis, recipe = _body(f"axis-question/seed{seed}"), _body(f"quickstart-amd-epyc/seed{seed}")
    assert axis["eval"] == recipe["eval"] and axis["provenance"]["cpu"] == recipe["provenance"]["cpu"]
    kernels = [_kernels(body) for body in (axis, recipe)]
    assert None in kernels or kernels[0] == kernels[1]  # one processor's kernels (seed 0's recipe run predates them)
    families = axis["config"]["data"].pop("train_extra_families")
    assert families == recipe["config"]["data"].pop("train_extra_families") + ["axis"]
    assert axis["config"] == recipe["config"]


@pytest.mark.parametrize("seed, first", [(0, "quickstart"), (1, "quickstart-seeds/seed1"),
                                         (2, "quickstart-seeds/seed2")])
def test_an_avx512_run_repeats_the_first_run_of_its_seed(seed, first):
    """RESULTS.md: seeds 0, 1 and 2 on an AVX-512 AMD EPYC give the first runs' figures to every
    stored digit (the processor whose kernels were not recorded then), where the AVX2 EPYC does not."""
    first, avx512, avx2 = (_body(f) for f in (first, f"quickstart-avx512/seed{seed}",
                                                f"quickstart-amd-epyc/seed{seed}"))
    assert _kernels(avx512) == "AVX512"
    assert avx2["provenance"]["cpu"] == avx512["provenance"]["cpu"] == "AMD EPYC"  # one label, two kernel levels
    assert _kernels(avx2) in ("AVX2", None)  # seed 0's predates them
    assert avx512["runs"] == first["runs"] and avx512["validation"] == first["validation"]
    assert avx512["eval"] == first["eval"] == avx2["eval"] and avx2["runs"] != first["runs"]
    first["config"]["llm"].pop("frame_positions_rms", None)
    assert avx512["config"]["llm"].pop("frame_positions_rms") == 0.32 and avx512["config"] == first["config"]


@pytest.mark.parametrize("path", sorted((FIGURES / "video-experiments").glob("*.json")), ids=lambda p: p.stem)
def test_a_committed_video_experiment_was_scored_on_validation_with_provenance(path):
    """RESULTS.md's video experiments choose levers; they are scored on the validation clips,
    never the held-out ones, and each file names the command and code that made it."""
    body = json.loads(path.read_text())
    assert body["split"] == "val" and body["name"] == path.stem
    assert PROVENANCE_KEYS <= set(body["provenance"]) and body["name"] in body["provenance"]["command"]
    upper = body["video_upper"]
    assert 0.0 <= upper["accuracy"] <= 1.0 and set(upper["per_family"]) == {
        "direction", "order", "color_change", "visible_count"}


@pytest.mark.parametrize("path", sorted((FIGURES / "temporal-experiments").glob("*.json")), ids=lambda p: p.stem)
def test_a_committed_temporal_experiment_was_scored_on_validation_with_provenance(path):
    """RESULTS.md's temporal experiments choose levers on the validation clips, never the held-out
    ones; the retention is the study's, from the same file's upper and lower bounds."""
    body = json.loads(path.read_text())
    assert body["split"] == "val" and body["name"] == path.stem
    assert PROVENANCE_KEYS <= set(body["provenance"]) and body["name"] in body["provenance"]["command"]
    runs = body["runs"]
    assert set(runs) == {"temporal", "video-upper", "lower"}
    hi, lo = runs["video-upper"]["accuracy"], runs["lower"]["accuracy"]
    assert runs["temporal"]["retention"] == pytest.approx((runs["temporal"]["accuracy"] - lo) / (hi - lo), abs=1e-3)


def test_a_temporal_table_says_which_scene_model_it_asked():
    """The perception line names the off-lattice tuning when the clip models started from it."""
    body = _body("temporal")  # `make temporal`: --off-lattice-steps 550
    tuned = temporal_markdown(body)
    base = temporal_markdown(body | {"temporal": body["temporal"] | {"off_lattice_steps": 0}})
    assert "(tuned 550 steps on off-lattice scenes) asked" in tuned
    assert "(tuned 550 steps on off-lattice scenes) asked" in temporal_markdown(_body("temporal-off-lattice"))
    assert "off-lattice" not in base and "The shared scene model asked" in base
