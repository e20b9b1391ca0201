"""Scenes and clips as pictures: a grid of scenes with their questions, and a clip's
frames in a row (time runs left to right). Pixels are drawn unsmoothed: the scenes are
tiny and an interpolated 64 px image hides exactly the small objects a question may be
about.
"""

from __future__ import annotations

import math
import re
import textwrap
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from vocolab.reporting.style import finish, new_figure


def plot_images(images: Sequence[np.ndarray], titles: Sequence[str] | None = None,
                cols: int = 4, wrap: int = 30) -> Figure:
    """A grid of scenes, each with a wrapped caption (e.g. its question and answer).

    Pixels are drawn unsmoothed: the scenes are tiny and an interpolated 64 px
    image hides exactly the small objects a question may be about.
    """
    n = len(images)
    if n == 0:
        raise ValueError("plot_images: no images")
    if titles is not None and len(titles) != n:
        raise ValueError(f"plot_images: {n} images but {len(titles)} titles")
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    wrapped = [wrap_text(str(t), wrap) for t in titles] if titles is not None else None
    lines = max((w.count("\n") + 1 for w in wrapped), default=0) if wrapped else 0
    fig, axes = new_figure((2.5 * cols, rows * (2.4 + 0.15 * lines)), rows, cols)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            fig.delaxes(ax)
            continue
        ax.imshow(np.asarray(images[i]), interpolation="nearest")
        ax.set_axis_off()
        if wrapped:
            ax.set_title(wrapped[i], fontsize=7.5)
    return finish(fig)


def wrap_text(text: str, width: int) -> str:
    """`textwrap.fill` that never starts a line with punctuation: the word-level texts
    put a space before `,` `.` `?`, and a break there would open a line with a stray comma."""
    glued = re.sub(r" ([,.?;:!])", "\u00a0\\1", text)  # no-break space: not a wrap point
    return textwrap.fill(glued, width).replace("\u00a0", " ")


def plot_clip(frames: np.ndarray, title: str | None = None) -> Figure:
    """The frames of one clip in a row, labelled t=0..T-1 (time runs left to right)."""
    frames = np.asarray(frames)
    if frames.ndim != 4:
        raise ValueError(f"plot_clip: expected [T, H, W, 3], got shape {frames.shape}")
    t = frames.shape[0]
    fig, axes = new_figure((2.0 * t, 2.5 if title else 2.2), 1, t)
    for i, ax in enumerate(axes[0]):
        ax.imshow(frames[i], interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(f"t={i}", fontsize=9)
    if title:
        fig.suptitle(wrap_text(title, 25 * t), fontsize=10)
    return finish(fig)


__all__ = ["plot_clip", "plot_images"]
