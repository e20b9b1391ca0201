"""Attention masks as pictures: which segment may see which.

Two colours only (a mask is a yes/no matrix, a gradient would suggest weights), segment
names at segment centres and thin lines at the boundaries, because the point of every
mask figure is *which segment may see which*. `plot_mask_modes` puts the modes side by
side: they differ in a few blocks only, and the eye finds the difference when the panels
share the layout and the labels.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import seaborn as sns
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from vocolab.core.layout import Layout
from vocolab.core.masks import build_mask
from vocolab.reporting.style import finish, new_figure

# Two colours only: a mask is a yes/no matrix, a gradient would suggest weights.
BLOCKED_COLOR = "#ebebeb"

ATTEND_COLOR = "#2f6db5"

SEPARATOR_COLOR = "#d9822b"  # orange reads on both the grey and the blue cells

MASK_CMAP = ListedColormap([BLOCKED_COLOR, ATTEND_COLOR])

MODE_CAPTIONS = {
    "causal": "causal: every token sees its past",
    "voco": "voco: text sees only VoCo + text",
    "video": "video: frames isolated, text sees all VoCo",
}


def _as_square(mask, sample: int) -> np.ndarray:
    """A `[L, L]` numpy bool array from a `[L, L]` or `[B, 1, L, L]` tensor/array."""
    m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if m.ndim == 4:
        if m.shape[1] != 1:
            raise ValueError(f"plot_mask: expected [B, 1, L, L], got {tuple(m.shape)}")
        m = m[sample, 0]
    elif m.ndim == 3:
        m = m[sample]
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"plot_mask: expected a square [L, L] mask, got shape {tuple(m.shape)}")
    if m.dtype == np.bool_:
        return m
    if np.issubdtype(m.dtype, np.floating) and (m < 0).any():
        return m == 0  # an additive (eager) mask: 0 = allowed, very negative = blocked
    return m != 0  # 0/1 integers


def layout_segments(layout: Layout, length: int | None = None) -> list[tuple[str, int, int]]:
    """`(label, start, stop)` of every non-empty segment, in sequence order.

    Labels: BOS, IMG / VOCO (IMG1, VOCO1, ... when there are several frames),
    Q (question), A (answer + EOS; Q1, A1, Q2, A2, ... for a multi-turn sample),
    PAD (right padding up to `length`).
    """
    length = layout.length if length is None else length
    if layout.length > length:
        raise ValueError(f"layout of {layout.length} tokens does not fit in length {length}")
    segs = [("BOS", 0, 1)]
    several = len(layout.frames) > 1
    for t, frame in enumerate(layout.frames, start=1):
        suffix = str(t) if several else ""
        if frame.image.length:
            segs.append((f"IMG{suffix}", frame.image.start, frame.image.stop))
        if frame.voco.length:
            segs.append((f"VOCO{suffix}", frame.voco.start, frame.voco.stop))
    # multi-turn samples: Q1 A1 Q2 A2 ... (every answer span is scored), else plain Q A
    start, n = layout.text.start, len(layout.turns)
    for t, span in enumerate(layout.turns, start=1):
        if span.start > start:
            segs.append((f"Q{t}", start, span.start))
        segs.append((f"A{t}", span.start, span.stop))
        start = span.stop
    suffix = str(n + 1) if n else ""
    if layout.question.length:
        segs.append((f"Q{suffix}", layout.question.start, layout.question.stop))
    if layout.answer.length:
        segs.append((f"A{suffix}", layout.answer.start, layout.answer.stop))
    if length > layout.length:
        segs.append(("PAD", layout.length, length))
    return segs


def _spread(centres: list[float], gap: float, lo: float, hi: float) -> list[float]:
    """Nudge sorted label positions apart by at least `gap`, staying within [lo, hi].

    One-token segments (BOS, a single VoCo token) sit next to each other; without
    this their tick labels would print on top of each other.
    """
    pos = list(centres)
    for i in range(1, len(pos)):
        pos[i] = max(pos[i], pos[i - 1] + gap)
    if pos and pos[-1] > hi:
        pos[-1] = hi
        for i in range(len(pos) - 2, -1, -1):
            pos[i] = min(pos[i], pos[i + 1] - gap)
    return [max(p, lo) for p in pos]


def plot_mask(mask, layout: Layout | Sequence[Layout], title: str | None = None, ax=None, *,
              sample: int = 0, legend: bool = True, fontsize: float = 8.0) -> Figure:
    """Heatmap of one attention mask: rows are queries, columns are keys.

    `mask` is `[L, L]` or a batch `[B, 1, L, L]` (pick the row with `sample`);
    `layout` is that sample's `Layout` (or the batch's list of layouts). Segment
    names sit at segment centres and thin lines mark the boundaries, because the
    point of every mask figure is *which segment may see which*.
    """
    m = _as_square(mask, sample)
    if not isinstance(layout, Layout):
        layout = layout[sample]
    length = m.shape[0]
    segs = layout_segments(layout, length)

    owned = ax is None
    if owned:
        fig, axes = new_figure((5.4 if legend else 4.6, 4.6))
        ax = axes[0, 0]
    fig = ax.figure

    sns.heatmap(m.astype(np.int8), ax=ax, cmap=MASK_CMAP, vmin=0, vmax=1, square=True,
                cbar=legend, cbar_kws={"shrink": 0.45, "aspect": 10} if legend else None,
                xticklabels=False, yticklabels=False, linewidths=0, rasterized=True)
    if legend:
        cbar = ax.collections[0].colorbar
        cbar.set_ticks([0.25, 0.75], labels=["blocked", "may attend"])
        cbar.ax.tick_params(labelsize=fontsize, length=0)
        cbar.outline.set_visible(False)

    bbox = ax.get_position()
    side_in = min(bbox.width * fig.get_figwidth(), bbox.height * fig.get_figheight())
    points_per_token = max(side_in * 72.0 / length, 1e-6)

    # separators at every segment boundary, thinner than a token so a one-token
    # segment (a single VoCo token) is not hidden under its own boundary lines
    lw = min(0.7, 0.35 * points_per_token)
    for _, start, _ in segs[1:]:
        ax.axhline(start, color=SEPARATOR_COLOR, lw=lw, alpha=0.9)
        ax.axvline(start, color=SEPARATOR_COLOR, lw=lw, alpha=0.9)
    for spine in ax.spines.values():
        spine.set_visible(True)
        spine.set_linewidth(0.6)

    # segment labels at centres, nudged apart when segments are one token wide
    gap = 1.2 * fontsize / points_per_token
    centres = [(start + stop) / 2 for _, start, stop in segs]
    ticks = _spread(centres, gap, 0.0, float(length))
    labels = [name for name, _, _ in segs]
    ax.set_xticks(ticks, labels=labels, rotation=90)
    ax.set_yticks(ticks, labels=labels, rotation=0)
    ax.tick_params(labelsize=fontsize, length=0, pad=2)
    ax.set_xlabel("key (may be attended to)", fontsize=fontsize + 1)
    ax.set_ylabel("query (attends)", fontsize=fontsize + 1)
    if title:
        ax.set_title(title, fontsize=fontsize + 2)
    return finish(fig) if owned else fig


def _legend_handles() -> list[Patch]:
    return [Patch(facecolor=BLOCKED_COLOR, edgecolor="#999999", label="blocked"),
            Patch(facecolor=ATTEND_COLOR, edgecolor="#999999", label="may attend")]


def describe_layout(layout: Layout, length: int | None = None) -> str:
    """One line: frames, V, K, text lengths and L (used as a figure's suptitle)."""
    n = len(layout.frames)
    what = "text only" if n == 0 else ("1 image" if n == 1 else f"{n}-frame clip")
    parts = [what]
    if n:
        parts.append(f"V={layout.image_tokens} image tokens, K={layout.voco_tokens} VoCo"
                     + (" per frame" if n > 1 else ""))
    parts.append(f"{layout.question.length} question + {layout.answer.length} answer tokens")
    total = layout.length if length is None else length
    parts.append(f"L={total}" + (f" ({total - layout.length} pad)" if total > layout.length else ""))
    return " | ".join(parts)


def plot_mask_modes(layout: Layout, modes: Sequence[str] = ("causal", "voco", "video"),
                    length: int | None = None) -> Figure:
    """The same layout under each mask mode, side by side, with one shared legend.

    Side by side because the modes differ in a few blocks only; the eye finds the
    difference when the panels share the layout and the labels.
    """
    n = len(modes)
    fig, axes = new_figure((4.2 * n, 4.9), 1, n)
    for i, (mode, ax) in enumerate(zip(modes, axes[0])):
        mask = build_mask([layout], mode, length)
        plot_mask(mask, layout, title=MODE_CAPTIONS.get(mode, mode), ax=ax, legend=False)
        if i:
            ax.set_ylabel("")
    fig.suptitle(describe_layout(layout, length), fontsize=10)
    fig.legend(handles=_legend_handles(), loc="outside lower center", ncols=2, fontsize=9,
               frameon=False)
    return finish(fig)


__all__ = [
    "ATTEND_COLOR", "BLOCKED_COLOR", "MASK_CMAP", "MODE_CAPTIONS", "SEPARATOR_COLOR", "describe_layout",
    "layout_segments", "plot_mask", "plot_mask_modes",
]
