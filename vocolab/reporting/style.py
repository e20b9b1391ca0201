"""How every figure is made and shown: one look, and shown exactly once wherever it is made.

Every figure is a function that returns its `Figure` (the Annotated Transformer's
`example_mask()` style), so a figure in a notebook, in the README and in `figures/` is
drawn by the same tested code. Display rules:

* a function that creates its own figure returns it; in a notebook with the inline
  backend the figure is detached from pyplot before it is returned (`finish`), so it is
  shown when it is the cell's value (or passed to `display`) and not a second time by the
  backend's end-of-cell flush;
* given `ax=`, a function draws into the caller's axes and leaves the figure alone;
* with no display (a CI runner, an SSH session) the non-interactive "Agg" backend is
  chosen at import, unless the user chose one (`MPLBACKEND`) or we run inside a notebook
  kernel, whose inline backend is respected.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import matplotlib


def _running_in_kernel() -> bool:
    """True inside a Jupyter kernel (where the inline backend must be kept)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return shell is not None and hasattr(shell, "kernel")


def _headless() -> bool:
    if os.environ.get("MPLBACKEND") or _running_in_kernel():
        return False
    if sys.platform.startswith("linux"):
        return not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return False


if _headless():
    matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
from matplotlib.figure import Figure  # noqa: E402


def _inline_backend() -> bool:
    return "inline" in str(matplotlib.get_backend()).lower()


def new_figure(figsize: tuple[float, float], nrows: int = 1, ncols: int = 1, **kw):
    """A figure with a constrained layout and an always-2-D array of axes."""
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, layout="constrained", squeeze=False, **kw)
    return fig, axes


def finish(fig: Figure) -> Figure:
    """Detach a figure we created from pyplot under the inline backend (see module doc)."""
    if _inline_backend():
        plt.close(fig)
    return fig


def human(n: float) -> str:
    """A count in a few characters: 1.23B, 45.6M, 7.8k."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{int(n)}"


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 150) -> Path:
    """Write `fig` (PNG unless `path` names another format), creating folders, then close it.

    Closing matters in loops and tests: pyplot keeps every open figure alive.
    """
    path = Path(path)
    if not path.suffix:
        path = path.with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return path


__all__ = ["finish", "human", "new_figure", "plt", "save_figure"]
