"""What a run runs with: device, seed, preset and mode, decided once at its start.

`setup()` is the first call of every notebook: results mean something only next to the
preset, mode and device they came from, so it prints them in one line. It also seeds
every generator (Lightning's `seed_everything`), quiets the framework chatter (Lightning's
banners, tips and worker warnings) that would bury a notebook's story, and makes Hugging
Face libraries work offline (nothing may be downloaded at run time) unless the user said
otherwise. `quick_mode()` is the one switch (VOCOLAB_QUICK=1) that shrinks every job for
CI and the notebooks.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from vocolab.core.config import Config
from vocolab.core.presets import preset as make_preset

_LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric",
                      "pytorch_lightning", "lightning_fabric")
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


def quick_mode() -> bool:
    """True when VOCOLAB_QUICK=1: notebooks and the CLI shrink steps and examples."""
    return os.environ.get("VOCOLAB_QUICK", "0") not in ("", "0", "false", "False")


def is_main_process() -> bool:
    """False in the extra processes Lightning starts for data parallelism (`train.devices` > 1):
    they run the whole command to train in step with the first one, and leave every file
    (results, checkpoints, cells) to it."""
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"


def device() -> torch.device:
    """CUDA when present, else CPU.

    Apple's MPS is deliberately not chosen automatically: several ops vocolab
    relies on (custom attention masks, bf16) are incomplete there; pass it
    explicitly where you want to try it.
    """
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def choose_preset(name: str | None = None) -> str:
    """Argument, else `VOCOLAB_PRESET`, else "small" on a CUDA machine, else "nano"."""
    if name:
        return name
    env = os.environ.get("VOCOLAB_PRESET", "").strip()
    if env:
        return env
    return "small" if torch.cuda.is_available() else "nano"


def package_version(package: str) -> str:
    """The installed version of `package`; for vocolab run from a source checkout that is
    not installed, the version its pyproject.toml names."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        pass
    if package == "vocolab":
        module = sys.modules.get("vocolab")
        if getattr(module, "__version__", None):
            return module.__version__
        pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
        try:
            import tomllib

            project = tomllib.loads(pyproject.read_text()).get("project", {})
            if project.get("name") == "vocolab" and project.get("version"):
                return project["version"]
        except (OSError, ValueError, ImportError):
            pass
    return "not installed"


def quiet_lightning() -> None:
    """Lightning's INFO banners and tips off, its known-noisy warnings ignored.

    Lightning sets its loggers to INFO when it is imported, so this must run after the
    import: `setup` (which imports it to seed) and `training.trainer.make_trainer` call it.
    Safe to call repeatedly.
    """
    for name in _LIGHTNING_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in _NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for module in ("lightning.fabric.utilities.warnings", "lightning_fabric.utilities.warnings"):
        mod = sys.modules.get(module)
        if mod is not None and hasattr(mod, "PossibleUserWarning"):
            warnings.filterwarnings("ignore", category=mod.PossibleUserWarning)


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
        return (f"vocolab {package_version('vocolab')} | preset {self.preset} | {quick} | "
                f"device {self.device.type} | torch {torch.__version__}")


def setup(preset: str | None = None, seed: int = 0, *, verbose: bool = True) -> RunInfo:
    """Seed, quiet the frameworks, pick the preset and print what this run uses.

    Environment variables are only ever *defaulted*: `HF_HUB_OFFLINE=1` is set
    when unset, because nothing may be downloaded at run time; everything the
    user set is left as it is.
    """
    from lightning import seed_everything

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    seed_everything(seed, verbose=False)
    quiet_lightning()
    name = choose_preset(preset)
    info = RunInfo(preset=name, quick=quick_mode(), device=device(), seed=seed,
                   config=make_preset(name, seed=seed))
    if verbose:
        print(info.summary())
    return info


__all__ = [
    "RunInfo", "choose_preset", "device", "is_main_process", "package_version", "quick_mode", "quiet_lightning",
    "setup",
]
