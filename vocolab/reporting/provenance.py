"""Provenance: the block every results file carries, so that any number in the README or
`figures/` traces back to the command, commit, device, package versions and wall time
that made it (docs/architecture.md, results files).

`cpu_name` names the processor: on the CPU the same code, seed and torch build repeat a run
bit for bit on one processor model, but the math library picks its kernels by processor, so
another model's rounding sends a seed-fragile training run elsewhere (RESULTS.md, the scaling
rerun: the same commit gave other accuracies on an AMD EPYC than the committed run).

`cpu_kernels` says what picked the kernels: torch's vector level, the thread count (MKL's
sums depend on it) and the settings that pin a math library's choice when they are set.
`MKL_CBWR=COMPATIBLE` is the one that MKL promises to give the same results on Intel and
compatible processors (`AVX2` and the like hold for Intel only); it changed the losses of a
quick-mode quickstart on an AMD EPYC and ran it 1.7x slower (RESULTS.md).

`git_state` says whether the checkout was clean; a run's own output folder does not
count as a change, or every run that writes results would mark itself dirty.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import torch

from vocolab.core.runtime import device, package_version

_VERSION_PACKAGES = ("torch", "transformers", "lightning", "datasets", "vocolab")


def _git(*args: str) -> str | None:
    """Output of a read-only git command in the package's checkout, or None."""
    try:
        out = subprocess.run(["git", "--no-optional-locks", *args], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state(ignore: str | os.PathLike | None = None) -> tuple[str, bool | None]:
    """(commit, dirty): "unknown"/None outside a git checkout or before the first commit.

    Dirty means tracked files differ from the commit; untracked files (figures,
    runs) are ignored, or every run that writes results would mark itself dirty.
    `ignore` is the folder a run writes to: its committed files (the cells of a
    resumed grid, the previous results) change during the run and say nothing about
    the code that ran.
    """
    commit = _git("rev-parse", "HEAD") or "unknown"
    args = ["status", "--porcelain", "--untracked-files=no"]
    root = _git("rev-parse", "--show-toplevel") if ignore is not None else None
    if root and Path(ignore).resolve().is_relative_to(Path(root).resolve()):
        args += ["--", ":/", f":(exclude){Path(ignore).resolve()}"]
    status = _git(*args)
    dirty = None if status is None else bool(status)
    return commit, dirty


def device_name(dev: torch.device | None = None) -> str:
    """The GPU's name on CUDA (e.g. "NVIDIA H100 80GB HBM3"), else the device type."""
    dev = device() if dev is None else dev
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return dev.type


def cpu_name() -> str:
    """The processor's model name ("AMD EPYC", "Intel(R) Xeon(R) ..."): /proc/cpuinfo on Linux,
    else `platform.processor()`, else "unknown"."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# settings that pin how MKL, oneDNN and ATen choose kernels; recorded when set
KERNEL_SETTINGS = ("MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA",
                   "ATEN_CPU_CAPABILITY")


def cpu_kernels() -> dict:
    """{"capability": torch's CPU vector level ("AVX2", ...), "threads": torch's thread count,
    "settings": the `KERNEL_SETTINGS` set in the environment}: with `cpu`, what a rerun must
    match to repeat a CPU run bit for bit."""
    settings = {name: os.environ[name] for name in KERNEL_SETTINGS if os.environ.get(name)}
    return {"capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
            "settings": settings}


def provenance(command: str, preset: str, seed: int, wall_s: float,
               out: str | os.PathLike | None = None) -> dict:
    """The `provenance` block of a results file (docs/architecture.md, results files); `out`: the folder
    the results go to (its own files do not make the checkout dirty)."""
    commit, dirty = git_state(out)
    versions = {"python": platform.python_version()}
    versions.update({pkg: package_version(pkg) for pkg in _VERSION_PACKAGES})
    return {
        "command": command,
        "commit": commit,
        "dirty": dirty,
        "preset": preset,
        "seed": seed,
        "device": device_name(),
        "cpu": cpu_name(),
        "cpu_kernels": cpu_kernels(),
        "versions": versions,
        "wall_s": round(float(wall_s), 3),
    }


__all__ = ["KERNEL_SETTINGS", "cpu_kernels", "cpu_name", "device_name", "git_state", "provenance"]
