"""Does everything run on this machine's accelerator? One line per item: the unit tests,
every `vocolab` command in quick mode, every notebook under nbmake.

    make gpu-check                         # or: python tools/device_check.py [--only ...]

Each item runs in its own process with VOCOLAB_QUICK=1 (its output in a temporary
folder), so a crash in one does not hide the others; the line says PASS or FAIL, the
seconds it took and, for a failure, the last line of its error. The exit code is the
number of failures (0: all passed). On a CPU-only machine it checks the CPU path.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def commands(work: Path) -> dict[str, list[str]]:
    """Every `vocolab` command, in quick mode, writing under `work`."""
    ckpt = work / "cache" / "runs" / "quickstart-nano-seed0-quick" / "checkpoints"
    fit = ["--trainer.max_steps", "2", "--data.train_n", "16", "--data.heldout_n", "4", "--data.batch_size", "8",
           "--data.progress", "false", "--trainer.enable_progress_bar", "false"]
    return {
        "quickstart": ["quickstart", "--out", str(work / "quickstart")],
        "eval": ["eval", "--upper", str(ckpt / "upper"), "--voco", str(ckpt / "voco"), "--out", str(work / "eval"),
                 "--limit", "20"],
        "fit (clip yaml)": ["fit", "--config", str(ROOT / "configs" / "nano" / "clip.yaml"), *fit],
        "sweep": ["sweep", "--out", str(work / "sweep"), "--methods", "voco", "avgpool", "fastv", "--ks", "1",
                  "--limit", "20"],
        "distill": ["distill", "--out", str(work / "distill"), "--ks", "1", "--limit", "20"],
        "temporal": ["temporal", "--out", str(work / "temporal"), "--limit", "20"],
        "mod": ["mod", "--out", str(work / "mod"), "--limit", "20"],
        "scaling": ["scaling", "--out", str(work / "scaling"), "--ks", "1", "--bootstrap", "5", "--limit", "20"],
        "bench": ["bench", "--out", str(work / "bench"), "--steps", "2"],
    }


def run(name: str, argv: list[str], env: dict, cwd: Path) -> bool:
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    ok = proc.returncode == 0
    detail = ""
    if ok and "pytest" in argv:
        detail = " " + next((line for line in reversed(proc.stdout.splitlines()) if "passed" in line), "").strip()
    if not ok:
        lines = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
        detail = " " + (lines[-1].strip() if lines else f"exit {proc.returncode}")
    print(f"{'PASS' if ok else 'FAIL'}  {name:28s} {seconds:7.1f} s{detail}", flush=True)
    return ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=("tests", "commands", "notebooks"),
                        help="tests | commands | notebooks (default: all three)")
    args = parser.parse_args(argv)
    import torch

    where = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only"
    print(f"device check: {where} | torch {torch.__version__} | python {sys.version.split()[0]}", flush=True)
    python, failures = sys.executable, 0
    with tempfile.TemporaryDirectory(prefix="vocolab-device-check-") as tmp:
        work = Path(tmp)
        env = {**os.environ, "VOCOLAB_QUICK": "1", "VOCOLAB_CACHE": str(work / "cache"),
               "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "MPLBACKEND": "Agg"}
        if "tests" in args.only:
            failures += not run("unit tests", [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
                                env, ROOT)
        if "commands" in args.only:
            for name, command in commands(work).items():
                failures += not run(f"vocolab {name}", [python, "-m", "vocolab.cli", *command], env, work)
        if "notebooks" in args.only:
            for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
                failures += not run(f"notebook {notebook.stem}", [python, "-m", "pytest", "-q", "-p",
                                                                  "no:cacheprovider", "--nbmake", str(notebook)],
                                    env, ROOT)
    print(f"device check: {failures} failure(s)")
    return failures


if __name__ == "__main__":
    sys.exit(main())
