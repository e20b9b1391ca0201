"""Runs that survive a lab: an unwritable output fails in one line before any work, Ctrl-C
says "interrupted" (exit 130) and the next run resumes instead of retraining, a cached
data set damaged in place is rebuilt, and the bench reports every stage."""

import errno
import json

import numpy as np
import pytest

from vocolab import cli
from vocolab.core.config import DataConfig
from vocolab.data.storage import cache_dir, load_scenes

TINY = ["data.image_size=32", "llm.hidden_size=32", "llm.layers=1", "llm.heads=2", "llm.kv_heads=2",
        "llm.intermediate_size=64", "vision.hidden_size=32", "vision.layers=2", "vision.heads=2",
        "vision.intermediate_size=64"]


@pytest.fixture
def quick(monkeypatch, tmp_path):
    monkeypatch.setenv("VOCOLAB_QUICK", "1")
    monkeypatch.setenv("VOCOLAB_CACHE", str(tmp_path / "cache"))


def _error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vocolab: error:"), lines
    return lines[0]


def test_an_output_under_a_file_or_on_a_read_only_disk_is_one_line(tmp_path, capsys, quick, monkeypatch):
    (tmp_path / "file").write_text("x")
    for command in ("quickstart", "sweep", "bench"):
        assert cli.main([command, "--out", str(tmp_path / "file" / "out")]) == 2
        assert "cannot write the output folder" in _error(capsys)

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("tempfile.TemporaryDirectory", read_only)
    assert cli.main(["quickstart", "--out", str(tmp_path / "ro" / "out")]) == 2
    assert "Read-only file system" in _error(capsys)


def test_ctrl_c_says_interrupted_leaves_the_output_and_the_rerun_resumes(tmp_path, capsys, quick, monkeypatch):
    from vocolab.training.modules import VLMModule

    out = tmp_path / "out"
    out.mkdir()
    (out / "earlier.json").write_text("{}")
    real_step, calls = VLMModule.training_step, {"n": 0}

    def interrupt_in_upper(self, batch, batch_idx):
        if self.stage == "upper":
            raise KeyboardInterrupt
        calls["n"] += 1
        return real_step(self, batch, batch_idx)

    monkeypatch.setattr(VLMModule, "training_step", interrupt_in_upper)
    argv = ["quickstart", "--out", str(out), "--set", *TINY]
    assert cli.main(argv) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "vocolab: interrupted"
    assert sorted(p.name for p in out.iterdir()) == ["earlier.json"]  # untouched
    pretrain_steps = calls["n"]
    assert pretrain_steps > 0

    monkeypatch.setattr(VLMModule, "training_step", real_step)
    assert cli.main(argv) == 0
    body = json.loads((out / "results.json").read_text())
    assert body["resumed_stages"] == ["clip", "pretrain"]  # loaded, not trained again
    assert cli.main(argv) == 0  # a finished run is not resumed: the next one starts afresh
    assert "resumed_stages" not in json.loads((out / "results.json").read_text())

    # the studies start from these very stages when their config is the quickstart's, never otherwise
    from vocolab.data.tokenizer import build_tokenizer
    from vocolab.studies.common import finished_quickstart
    from vocolab.studies.quickstart import job_config

    cfg = job_config("nano", 0, cli._parse_overrides(TINY))
    stages = ("clip", "pretrain", "upper")
    assert finished_quickstart(cfg, build_tokenizer(cfg.data), stages).name == "quickstart-nano-seed0-quick"
    other = cfg.override(**{"train.instruct_steps": cfg.train.instruct_steps + 1})
    assert finished_quickstart(other, build_tokenizer(cfg.data), stages) is None


def test_a_cached_split_damaged_in_place_is_rebuilt(tmp_path):
    cfg = DataConfig(train_scenes=12, heldout_scenes=6, storage="arrays")  # pixels on disk to damage
    first = load_scenes(cfg, "train", root=tmp_path, progress=False)
    images = np.stack([np.asarray(x) for x in first["image"]])
    arrow = sorted((cache_dir(cfg, "scenes", "train", root=tmp_path) / "dataset").glob("*.arrow"))[0]
    data = bytearray(arrow.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte flipped in the middle of the pixels: same size
    arrow.write_bytes(bytes(data))
    again = load_scenes(cfg, "train", root=tmp_path, progress=False)
    assert np.array_equal(np.stack([np.asarray(x) for x in again["image"]]), images)


def test_the_bench_reports_every_stage_and_the_evaluation(tmp_path, quick):
    from vocolab.studies.bench import run_bench

    overrides = dict(kv.split("=") for kv in TINY)
    overrides = {k: int(v) for k, v in overrides.items()}
    body = run_bench("nano", tmp_path / "bench", steps=2, questions=4, overrides=overrides)
    stages = [r["stage"] for r in body["runs"]]
    assert stages == ["clip", "pretrain", "upper", "voco", "eval-full", "eval-voco-cache"]
    for row in body["runs"][:4]:
        assert row["step_ms"] > 0 and row["tokens_per_s"] > 0 and 0 < row["mfu"] < 1
        assert row["flops_per_step"] > 0
    assert (tmp_path / "bench" / "table.md").read_text().count("|") > 20
    assert body["bench"]["peak_flops"] > 0 and body["provenance"]["command"] == "vocolab bench"
