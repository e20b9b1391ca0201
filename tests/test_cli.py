"""The `vocolab` command, run in-process through `vocolab.cli.main`.

Bad input must give one line on stderr and exit code 2 (never a traceback) and
write nothing; a good run must write the complete output folder; a run that
fails half-way must leave no folder behind (and must not touch an older one).
The successful run uses quick mode (data sizes from `quickstart.QUICK_SIZES`)
and a model shrunk further with `--set`, so the whole file takes seconds.
"""

import json

import pytest

from vocolab import cli
from vocolab.data.scenes import FAMILIES
from vocolab.studies.common import job_runs

# a model of a few thousand parameters on 32 px images (V = 16): seconds, not minutes
TINY = ["data.image_size=32", "llm.hidden_size=32", "llm.layers=1", "llm.heads=2", "llm.kv_heads=2",
        "llm.intermediate_size=64", "vision.hidden_size=32", "vision.layers=2", "vision.heads=2",
        "vision.intermediate_size=64"]
FIGURES = ("masks.png", "masks_video.png", "data_sample.png", "clip_sample.png", "table1_accuracy.png",
           "table7_costs.png", "training_curves.png")
TABLES = ("results.json", "table1.md", "table7.md")
# docs/architecture.md, results files
PROVENANCE_KEYS = ("command", "commit", "preset", "seed", "device", "versions", "wall_s")


@pytest.fixture(scope="module")
def data_cache(tmp_path_factory):
    """One data cache for the whole file: the quick-mode splits are generated once."""
    return tmp_path_factory.mktemp("vocolab-cache")


@pytest.fixture
def quick(monkeypatch, data_cache):
    monkeypatch.setenv("VOCOLAB_QUICK", "1")
    monkeypatch.setenv("VOCOLAB_CACHE", str(data_cache))


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("vocolab: error:")
    return lines[0]


def _leftovers(folder):
    """Hidden staging folders (`.<name>.*`) left next to an output folder."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_unknown_preset_is_one_line_and_exit_2(tmp_path, capsys, quick):
    out = tmp_path / "out"
    assert cli.main(["quickstart", "--preset", "huge", "--out", str(out)]) == 2
    line = _one_error_line(capsys)
    assert "huge" in line and "nano" in line  # says what was wrong and what to choose
    assert not out.exists() and _leftovers(tmp_path) == []


@pytest.mark.parametrize("pairs, field", [
    (["voco.tokens=999"], "voco.tokens"),           # fails cross-field validation
    (["nosuch.key=1"], "nosuch"),                   # unknown field
    (["badpair"], "badpair"),                       # not key=value
    (["llm.layers=two"], "llm.layers"),             # wrong type
    (["voco.mask=sideways"], "voco.mask"),          # not a mask mode
    (["train.voco_objective=telepathy"], "train.voco_objective"),  # not a distillation objective
    (['data.colors=["gold", "red"]'], "data.colors"),  # a colour the renderer cannot draw
])
def test_bad_override_is_one_line_naming_the_field(tmp_path, capsys, quick, pairs, field):
    out = tmp_path / "out"
    assert cli.main(["quickstart", "--out", str(out), "--set", *pairs]) == 2
    assert field in _one_error_line(capsys)
    assert not out.exists() and _leftovers(tmp_path) == []


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["quickstart", "--seed", "seven"])
    assert exit_info.value.code == 2
    assert "--seed" in capsys.readouterr().err


def test_quickstart_writes_the_complete_folder(tmp_path, capsys, quick):
    out = tmp_path / "figures" / "quickstart"
    argv = ["quickstart", "--preset", "nano", "--seed", "3", "--out", str(out), "--set", *TINY]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert "quick mode ON" in captured.out and "error" not in captured.err  # stderr: progress bars only

    assert sorted(p.name for p in out.iterdir()) == sorted(FIGURES + TABLES)
    for name in FIGURES:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert _leftovers(out.parent) == []

    summary = json.loads((out / "results.json").read_text())
    prov = summary["provenance"]
    for key in PROVENANCE_KEYS:
        assert key in prov, key
    assert prov["command"] == "vocolab " + " ".join(argv)
    assert prov["preset"] == "nano" and prov["seed"] == 3 and prov["wall_s"] > 0
    assert prov["versions"]["torch"] and prov["device"] and prov["commit"]

    cfg = summary["config"]
    assert cfg["seed"] == 3 and cfg["llm"]["layers"] == 1 and cfg["data"]["image_size"] == 32
    assert cfg["data"]["train_scenes"] == 200 and cfg["train"]["voco_steps"] == 10  # quick sizes
    runs = {r["name"]: r for r in summary["runs"]}
    assert set(runs) == {"upper", "lower", "blind", "voco-k1"}
    assert summary["eval"]["examples"] == 100 * 5 and set(summary["eval"]["families"]) == set(FAMILIES)
    for run in runs.values():
        assert 0 <= run["accuracy"] <= 1 and set(run["per_family"]) <= set(FAMILIES)
    assert runs["upper"]["tokens"] == 16 and runs["voco-k1"]["tokens"] == 1 and runs["blind"]["tokens"] == 0
    assert "retention" in runs["voco-k1"] and "retention" not in runs["upper"]
    cost = summary["cost"]["settings"]
    assert cost["voco_caching"]["flops"] < cost["full_caching"]["flops"] < cost["no_caching"]["flops"]
    assert cost["full_caching"]["cache_bytes"] == cost["voco_caching"]["cache_bytes"] * (1 + 16 + 1)
    assert "| upper |" in (out / "table1.md").read_text() and "VoCo caching" in (out / "table7.md").read_text()

    checks = {c["mode"]: c for c in summary["mask_check"]}
    assert set(checks) == {"causal", "voco", "video"} and checks["video"]["input"] == "clips"
    for c in checks.values():
        assert c["finite"] and c["loss"] > 0
    # the masks that hide the image hide it completely; the causal one does not
    assert checks["voco"]["max_text_attention_on_bos_and_image"] == 0
    assert checks["video"]["max_text_attention_on_bos_and_image"] == 0
    assert checks["causal"]["max_text_attention_on_bos_and_image"] > 0


def _fail_at(monkeypatch, target: str, folder=None) -> list:
    """Make the figure function `target` (a dotted path) raise ValueError; return the list
    that will hold the names of the files staged (next to the output, in `folder`) when it raised."""
    name = target.rpartition(".")[2]
    staged: list = []

    def boom(*args, **kwargs):
        if folder is not None:
            staged.extend(sorted(f.name for d in folder.glob(".out.*") for f in d.iterdir()))
        raise ValueError(f"{name} exploded")

    monkeypatch.setattr(target, boom)  # quickstart imports it at call time
    return staged


def test_failing_run_leaves_no_folder(tmp_path, capsys, quick, monkeypatch):
    staged = _fail_at(monkeypatch, "vocolab.reporting.images.plot_images", tmp_path)  # one of the last figures
    out = tmp_path / "out"
    assert cli.main(["quickstart", "--out", str(out), "--set", *TINY]) == 2
    assert "plot_images exploded" in _one_error_line(capsys)
    assert "masks.png" in staged and "results.json" not in staged  # it failed half-way through writing
    assert not out.exists()
    assert _leftovers(tmp_path) == []  # the staging folder is gone too


def test_failing_run_keeps_the_previous_folder(tmp_path, capsys, quick, monkeypatch):
    _fail_at(monkeypatch, "vocolab.reporting.masks.plot_mask_modes")
    out = tmp_path / "out"
    out.mkdir()
    (out / "quickstart.json").write_text("{}\n")  # results of an earlier run
    assert cli.main(["quickstart", "--out", str(out), "--set", *TINY]) == 2
    _one_error_line(capsys)
    assert [p.name for p in out.iterdir()] == ["quickstart.json"]
    assert (out / "quickstart.json").read_text() == "{}\n"
    assert _leftovers(tmp_path) == []


def test_eval_rescores_the_saved_checkpoints_and_counts_spatial_answers(tmp_path, capsys, quick):
    """`vocolab eval` on the checkpoints a quickstart saved gives that quickstart's Table 1
    again (same held-out questions, same greedy answers), and `--confusion spatial` adds
    which direction each model answered for each gold direction, with its figure."""
    first = tmp_path / "quickstart"
    assert cli.main(["quickstart", "--seed", "5", "--out", str(first), "--set", *TINY]) == 0
    saved = job_runs("quickstart", "nano", 5) / "checkpoints"  # where quickstart saved them
    out = tmp_path / "eval"
    argv = ["eval", "--upper", str(saved / "upper"), "--voco", str(saved / "voco"), "--out", str(out),
            "--confusion", "spatial"]
    assert cli.main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["confusion_spatial.png", "results.json", "table1.md"]
    before = {r["name"]: r for r in json.loads((first / "results.json").read_text())["runs"]}
    after = {r["name"]: r for r in json.loads((out / "results.json").read_text())["runs"]}
    assert set(after) == set(before) == {"upper", "lower", "blind", "voco-k1"}
    for name, run in after.items():
        assert run["accuracy"] == before[name]["accuracy"] and run["per_family"] == before[name]["per_family"], name
    asked = set()
    for name in ("upper", "lower", "voco-k1"):
        conf = after[name]["confusion"]["spatial"]
        assert conf["labels"] == ["above", "below", "left", "right", "(other)"]
        counts = conf["counts"]
        asked.add(sum(map(sum, counts)))  # at most one spatial question per held-out scene (100 in quick mode)
        assert sum(counts[i][i] for i in range(4)) / sum(map(sum, counts)) == pytest.approx(
            after[name]["per_family"]["spatial"])
        assert set(conf["groups"]) == {"group", "within_group", "examples"}
    assert len(asked) == 1 and 0 < asked.pop() <= 100  # every model answered the same spatial questions
    assert "confusion" not in after["blind"]
    capsys.readouterr()  # the runs' progress bars
    assert cli.main(["eval", "--upper", str(saved / "upper"), "--out", str(tmp_path / "bad"),
                     "--confusion", "spatiall"]) == 2
    assert "spatiall" in _one_error_line(capsys) and not (tmp_path / "bad").exists()


def test_every_command_imports_without_the_notebook_packages():
    """A GPU image has torch and Lightning but no Jupyter: the first `small` run on an H200
    stopped at import because the reporting package pulled in `ipywidgets`. In a fresh
    interpreter that cannot import ipywidgets or IPython, every module a command runs imports."""
    import subprocess
    import sys

    blocker = ("import sys\n"
               "sys.modules.update(ipywidgets=None, IPython=None)\n"  # as if not installed: imports fail
               "import importlib, pkgutil, vocolab\n"
               "for m in pkgutil.walk_packages(vocolab.__path__, 'vocolab.'):\n"
               "    importlib.import_module(m.name)\n"
               "print('imported')\n")
    out = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True)
    assert out.returncode == 0 and "imported" in out.stdout, out.stderr[-2000:]
