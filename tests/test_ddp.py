"""Data parallelism through Lightning, proved on the CPU: two processes (DDP over gloo)
with a global batch of 8 (4 each) end where one process with a batch of 8 ends.

Each process draws the same permutation and takes its share of every global batch
(`data.sampler.ResumableSampler`), and the loss is rescaled so that the averaged
gradients are those of the mean over every process's answer tokens
(`VLMModule.global_token_mean`); what remains is the order in which floating-point sums
are taken, hence the tolerance. The run goes through `vocolab fit`, as a user would
start it: Lightning launches the second process by running the same command again.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "nano"
TINY = json.dumps({"data.image_size": 32, "llm.hidden_size": 32, "llm.layers": 1, "llm.heads": 2,
                   "llm.kv_heads": 2, "llm.intermediate_size": 64, "vision.hidden_size": 32, "vision.heads": 2,
                   "vision.intermediate_size": 64, "train.warmup_frac": 0.25})
TOLERANCE = 1e-5


def _fit(folder: Path, devices: int, batch: int = 8) -> dict:
    folder.mkdir(parents=True)
    argv = [sys.executable, "-m", "vocolab.cli", "fit", "--config", str(CONFIGS / "upper.yaml"),
            "--model.init_args.init_from", "null", "--model.init_args.overrides", TINY, "--data.overrides", TINY,
            "--data.train_n", "32", "--data.heldout_n", "4", "--data.batch_size", str(batch),
            "--data.progress", "false",
            "--trainer.max_steps", "4", "--trainer.accelerator", "cpu", "--trainer.devices", str(devices),
            "--trainer.enable_progress_bar", "false"]
    if devices > 1:
        argv += ["--trainer.strategy", "ddp"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(argv, cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ckpt = folder / "runs" / "nano" / "upper" / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert state["global_step"] == 4
    return state["state_dict"]


def _gap(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def test_two_processes_train_like_one_with_the_same_global_batch(tmp_path, monkeypatch):
    monkeypatch.setenv("VOCOLAB_CACHE", str(tmp_path / "cache"))
    one = _fit(tmp_path / "one", devices=1)
    two = _fit(tmp_path / "two", devices=2)
    assert _gap(one, two) < TOLERANCE, f"largest weight difference {_gap(one, two):.2e}"
    other = _fit(tmp_path / "other", devices=1, batch=4)  # another global batch: the test can fail
    assert _gap(one, other) > 100 * TOLERANCE
