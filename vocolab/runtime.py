"""The first call of every notebook and command: `setup()`, plus run provenance.

`setup()` exists so that every notebook starts the same way and says, in one
printed line, which preset, mode and device it runs on: a result is only
meaningful next to those facts. It also silences the framework chatter
(Lightning's banners, tips and worker warnings) that would otherwise bury a
notebook's story, seeds every generator, and makes Hugging Face libraries work
offline (nothing may be downloaded at run time) unless the user said otherwise.

`provenance()` builds the block every results file carries (DESIGN.md section 6)
so any number can be traced back to a command, a commit and an environment.
"""

from __future__ import annotations

import importlib.abc
import importlib.metadata
import logging
import os
import platform
import random
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import Config, preset as make_preset, quick_mode

_LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric",
                      "pytorch_lightning", "lightning_fabric")
_LIGHTNING_PACKAGES = ("lightning", "pytorch_lightning", "lightning_fabric")
_NOISY_WARNINGS = (
    r".*does not have many workers.*",
    r".*num_workers.*",
    r".*persistent_workers.*",
    r".*GPU available but not used.*",
    r".*is smaller than the logging interval.*",
    r".*exists and is not empty.*",
    r".*LitLogger.*",
    r".*litmodels.*",
    r".*Tip:.*",
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",  # lightning 2.6 on torch >= 2.10
)
_VERSION_PACKAGES = ("torch", "transformers", "lightning", "datasets", "vocolab")


@dataclass
class RunInfo:
    """What a notebook runs with: its results mean something only next to these."""

    preset: str
    quick: bool
    device: torch.device
    seed: int
    config: Config

    def summary(self) -> str:
        quick = (f"quick mode ON (VOCOLAB_QUICK={os.environ.get('VOCOLAB_QUICK', '1')})"
                 if self.quick else "quick mode off")
        return (f"vocolab {_version('vocolab')} | preset {self.preset} | {quick} | "
                f"device {self.device.type} | torch {torch.__version__}")


# -- quieting Lightning ----------------------------------------------------------------


def quiet_lightning() -> None:
    """Lightning's INFO banners and tips off, its known-noisy warnings ignored.

    Safe to call repeatedly. Lightning resets its loggers to INFO when it is
    imported, so calling this before the import would not last; `setup()`
    therefore also arranges (`_after_import`) for it to run again right after
    Lightning is first imported, without importing it itself (that costs ~5 s
    on a CPU, too much for notebooks that never train).
    """
    for name in _LIGHTNING_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in _NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for module in ("lightning.fabric.utilities.warnings", "lightning_fabric.utilities.warnings"):
        mod = sys.modules.get(module)
        if mod is not None and hasattr(mod, "PossibleUserWarning"):
            warnings.filterwarnings("ignore", category=mod.PossibleUserWarning)


class _AfterImport(importlib.abc.MetaPathFinder):
    """Run a callback once a top-level package has finished importing.

    It finds the package's spec with the other finders and wraps its loader, so
    the import itself is unchanged; the callback runs after the package's
    `__init__` (which is where Lightning sets its loggers to INFO).
    """

    def __init__(self, names: tuple[str, ...], callback) -> None:
        self.names = set(names)
        self.callback = callback

    def find_spec(self, fullname, path, target=None):
        if fullname not in self.names:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        callback = self.callback

        class _Loader(importlib.abc.Loader):
            def create_module(self, spec):
                return loader.create_module(spec)

            def exec_module(self, module):
                loader.exec_module(module)
                callback()

            def __getattr__(self, name):  # get_code, get_source, is_package, ...
                return getattr(loader, name)

        spec.loader = _Loader()
        return spec


def _after_import() -> None:
    """Install the Lightning import hook once (no-op when Lightning is imported already)."""
    if any(isinstance(f, _AfterImport) for f in sys.meta_path):
        return
    missing = tuple(p for p in _LIGHTNING_PACKAGES if p not in sys.modules)
    if missing:
        sys.meta_path.insert(0, _AfterImport(missing, quiet_lightning))


# -- setup -----------------------------------------------------------------------------


def device() -> torch.device:
    """CUDA when present, else CPU.

    Apple's MPS is deliberately not chosen automatically: several ops vocolab
    relies on (custom attention masks, bf16) are incomplete there; pass it
    explicitly where you want to try it.
    """
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_all(seed: int) -> None:
    """Seed Python, NumPy and torch (all CUDA devices included)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def choose_preset(name: str | None = None) -> str:
    """Argument, else `VOCOLAB_PRESET`, else "small" on a CUDA machine, else "nano"."""
    if name:
        return name
    env = os.environ.get("VOCOLAB_PRESET", "").strip()
    if env:
        return env
    return "small" if torch.cuda.is_available() else "nano"


def setup(preset: str | None = None, seed: int = 0, *, verbose: bool = True) -> RunInfo:
    """Quiet the frameworks, seed, pick the preset and print what this run uses.

    Environment variables are only ever *defaulted*: `HF_HUB_OFFLINE=1` is set
    when unset, because nothing may be downloaded at run time; everything the
    user set is left as it is.
    """
    quiet_lightning()
    _after_import()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    seed_all(seed)
    name = choose_preset(preset)
    cfg = make_preset(name, seed=seed)
    info = RunInfo(preset=name, quick=quick_mode(), device=device(), seed=seed, config=cfg)
    if verbose:
        print(info.summary())
    return info


# -- provenance ------------------------------------------------------------------------


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        pass
    if package == "vocolab":  # running from a source checkout that is not installed
        module = sys.modules.get("vocolab")
        if getattr(module, "__version__", None):
            return module.__version__
        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        try:
            import tomllib

            project = tomllib.loads(pyproject.read_text()).get("project", {})
            if project.get("name") == "vocolab" and project.get("version"):
                return project["version"]
        except (OSError, ValueError, ImportError):
            pass
    return "not installed"


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


def provenance(command: str, preset: str, seed: int, wall_s: float,
               out: str | os.PathLike | None = None) -> dict:
    """The `provenance` block of a results file (DESIGN.md section 6); `out`: the folder
    the results go to (its own files do not make the checkout dirty)."""
    commit, dirty = git_state(out)
    versions = {"python": platform.python_version()}
    versions.update({pkg: _version(pkg) for pkg in _VERSION_PACKAGES})
    return {
        "command": command,
        "commit": commit,
        "dirty": dirty,
        "preset": preset,
        "seed": seed,
        "device": device_name(),
        "versions": versions,
        "wall_s": round(float(wall_s), 3),
    }


__all__ = ["RunInfo", "choose_preset", "device", "device_name", "git_state", "provenance",
           "quiet_lightning", "seed_all", "setup"]
