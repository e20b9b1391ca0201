"""Helpers the data tests share (the `nano` fixture itself lives in conftest.py)."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest

from vocolab.core.config import DataConfig

# the three presets' geometries: (image_size, grid); 128 / 6 has fractional cells
RENDER_CONFIGS = [
    DataConfig(),
    DataConfig(image_size=128, grid=6, max_objects=8, frames=6),
    DataConfig(image_size=336, patch_size=14, grid=8, max_objects=8, frames=8),
]


def rngs(n: int, seed: int = 0):
    """n independent generators, one per item, as storage uses them."""
    return [np.random.default_rng([seed, i]) for i in range(n)]


@contextmanager
def data_cache(tmp_path_factory):
    """A fresh data cache: VOCOLAB_CACHE points at a new temporary folder (yielded) while
    the block runs; for a module-scoped `cache` fixture."""
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VOCOLAB_CACHE", str(root))
        yield root


def forbid_reruns(monkeypatch, target: str) -> list[str]:
    """Patch `target` (a module's imported `run_cells`) so that every cell it is given fails
    the test if it runs; returns the list of cell names it was given (filled on use)."""
    from vocolab.studies import cells

    given: list[str] = []
    real = cells.run_cells

    def spy(grid, folder, **kw):
        grid = list(grid)
        given.extend(name for name, _, _ in grid)
        return real([(n, k, lambda n=n: pytest.fail(f"{n} was rerun")) for n, k, _ in grid], folder, **kw)

    monkeypatch.setattr(target, spy)
    return given
