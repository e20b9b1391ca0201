"""Training curves: the loss per stage (the next-token part for a distilled stage, so
every stage plots the same quantity) and held-out exact match where a stage validated,
read back from each stage's Lightning `metrics.csv`.
"""

from __future__ import annotations

import os
from typing import Mapping

import matplotlib.ticker
import numpy as np
from matplotlib.figure import Figure

from vocolab.reporting.style import finish, new_figure


def stage_losses(rows: list[dict]) -> list[tuple[int, float]]:
    """(step, training loss) from the rows of a stage's Lightning `metrics.csv`.

    A distilled stage logs its next-token part as `train/ce` next to the total
    `train/loss`; `train/ce` is returned there, the quantity the other stages log."""
    key = "train/ce" if any(r.get("train/ce") for r in rows) else "train/loss"
    return [(int(r["step"]), float(r[key])) for r in rows if r.get(key)]


def plot_training_curves(logs: Mapping[str, str | os.PathLike], smooth: int = 5) -> Figure:
    """Training loss per stage (`stage_losses`, left) and held-out exact match where
    logged (right), read from each stage's Lightning `metrics.csv`; `logs` maps stage
    name -> csv path."""
    import csv

    fig, axes = new_figure((10, 3.6), 1, 2)
    loss_ax, acc_ax = axes[0]
    for name, path in logs.items():
        rows = list(csv.DictReader(open(path)))
        train = stage_losses(rows)
        if train:
            steps, values = zip(*train)
            kernel = np.ones(min(smooth, len(values))) / min(smooth, len(values))
            loss_ax.plot(steps[len(kernel) - 1:], np.convolve(values, kernel, mode="valid"), label=name)
        val = [(int(r["step"]), float(r["val/exact_match"])) for r in rows if r.get("val/exact_match")]
        if val:
            acc_ax.plot(*zip(*val), marker="o", label=name)
    loss_ax.set(xlabel="optimiser step", ylabel="training loss (contrastive / next token)", yscale="log",
                title="loss per stage")
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:.3g}")  # 2.5, not 2.5x10^0
    loss_ax.yaxis.set_major_formatter(plain)
    loss_ax.yaxis.set_minor_formatter(plain)
    loss_ax.legend(fontsize=8)
    acc_ax.set(xlabel="optimiser step", ylabel="held-out exact match", ylim=(0, 1), title="held-out accuracy")
    if acc_ax.lines:
        acc_ax.legend(fontsize=8)
    else:  # no stage validated during training (run_recipe never does): no empty panel
        fig.delaxes(acc_ax)
    return finish(fig)


__all__ = ["plot_training_curves", "stage_losses"]
