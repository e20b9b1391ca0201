"""Keep every test run's caches inside the repo's ignored .cache folder, offline."""

import os
from pathlib import Path

_CACHE = Path(__file__).resolve().parents[1] / ".cache"
for _name, _value in {
    "VOCOLAB_CACHE": str(_CACHE),
    "HF_HOME": str(_CACHE / "hf"),
    "MPLCONFIGDIR": str(_CACHE / "mpl"),
    "TORCHINDUCTOR_CACHE_DIR": str(_CACHE / "inductor"),
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_name, _value)
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402  (after the environment is set: imports below may read it)

from vocolab.core.config import DataConfig  # noqa: E402


@pytest.fixture
def nano() -> DataConfig:
    """The nano preset's data configuration."""
    return DataConfig()
