"""Attention drawn over the scene: a patch-grid heatmap stretched over the image (where
some token looks), the teacher's and the student's attention per layer for the
distillation notebook, and which vision tokens each MoD layer computed.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import torch
from matplotlib.figure import Figure

from vocolab.reporting.style import finish, new_figure


def plot_attention_overlay(image: np.ndarray, weights, grid: tuple[int, int], ax=None,
                           title: str | None = None) -> Figure:
    """A patch-grid heatmap stretched over the scene, each cell covering its patch: where
    in the image some token looks."""
    owned = ax is None
    if owned:
        fig, axes = new_figure((2.4, 2.4))
        ax = axes[0, 0]
    h, w = image.shape[:2]
    weights = torch.as_tensor(weights).float().reshape(grid).numpy()
    ax.imshow(image, interpolation="nearest")
    ax.imshow(weights, extent=(-0.5, w - 0.5, h - 0.5, -0.5), cmap="magma", alpha=0.6, interpolation="nearest",
              vmin=0)
    if title:
        ax.set_title(title, fontsize=8)
    ax.set_axis_off()
    return finish(ax.figure)


def plot_distill_attention(image: np.ndarray, teacher: Mapping, student: Mapping) -> Figure:
    """One row per LLM layer: the teacher's text->image attention over the scene, the
    student's text->VoCo attention per VoCo token, and each VoCo token's attention over
    the scene. `teacher`/`student` are `evaluation.attention.mean_attention` outputs."""
    t_image, s_voco, voco_image = teacher["text_to_image"], student["text_to_voco"], student["voco_to_image"]
    layers, k = s_voco.shape
    fig, axes = new_figure((1.9 * (2 + k), 1.9 * layers), nrows=layers, ncols=2 + k)
    for layer, row in enumerate(axes):
        plot_attention_overlay(image, t_image[layer], teacher["grid"], row[0],
                               f"L{layer} teacher text→image ({t_image[layer].sum():.2f})")
        row[1].bar([f"V{i + 1}" for i in range(k)], s_voco[layer].numpy(), color="#2f6db5")
        row[1].set_ylim(0, 1)
        row[1].set_title(f"L{layer} student text→VoCo", fontsize=8)
        row[1].tick_params(labelsize=7)
        for i in range(k):
            plot_attention_overlay(image, voco_image[layer, i], student["grid"], row[2 + i],
                                   f"L{layer} VoCo{i + 1}→image ({voco_image[layer, i].sum():.2f})")
    return finish(fig)


def plot_mod_routing(frames, records, layout, sample: int = 0, scores: bool = False, names=None):
    """Which vision tokens each MoD layer computed, drawn over the clip: one row per
    `LayerRecord` (`MoDVLM.records`, or a pick of them), one column per frame of `layout`;
    bright patches were computed there, dark ones skipped the layer. With `scores`, each
    frame's router scores (min-max scaled per frame; learned routing only) instead: the
    ranking top-k cut. `names` labels the rows (default "layer l")."""

    from vocolab.reporting.style import finish, new_figure

    spans = [f.image for f in layout.frames if f.image.length]
    side = math.isqrt(spans[0].length)
    fig, axes = new_figure((1.9 * len(spans), 2.0 * len(records)), nrows=len(records), ncols=len(spans))
    for i, (row, rec) in enumerate(zip(axes, records)):
        kept = set(rec.selected_of(sample))
        name = names[i] if names else f"layer {rec.layer}"
        for t, (ax, span) in enumerate(zip(row, spans)):
            on = torch.tensor([float(p in kept) for p in span.range()])
            if scores:
                s = rec.scores[sample, span.start : span.stop].float().cpu()
                values, what = (s - s.min()) / (s.max() - s.min()).clamp(min=1e-12), "score"
            else:
                values, what = on, f"{int(on.sum())}/{span.length} kept"
            plot_attention_overlay(frames[t], values, (side, side), ax, f"{name}, t={t}: {what}")
    return finish(fig)


__all__ = ["plot_attention_overlay", "plot_distill_attention", "plot_mod_routing"]
