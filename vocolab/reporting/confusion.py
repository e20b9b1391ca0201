"""Which answer a model gave for which gold answer, one panel per run: a family's
accuracy told apart into how it fails (`evaluation.confusion`).

A cell's colour is the share of its row (the gold answer's questions), so a good model is
a bright diagonal whatever the answers' frequencies; the cell's text is the count.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import seaborn as sns
from matplotlib.figure import Figure

from vocolab.reporting.style import finish, new_figure


def confusion_title(name: str, confusion: Mapping) -> str:
    """The panel's title: the run, its accuracy on the family and, where the answers fall
    into groups, the group (axis) and within-group (order) accuracies."""
    counts = np.asarray(confusion["counts"])
    title = f"{name}: {np.trace(counts) / max(1, counts.sum()):.0%}"
    groups = confusion.get("groups")
    if groups and groups["group"] is not None:
        order = groups["within_group"]
        title += f"\naxis {groups['group']:.0%}, order {'n/a' if order is None else f'{order:.0%}'}"
    return title


def plot_confusion(runs: Mapping[str, Mapping], family: str) -> Figure:
    """Row-normalised confusion heatmaps of `family`, one per run.

    `runs` maps a run's name to its `confusion[family]` (`answer_confusion`'s dict, as
    `vocolab eval --confusion` stores it in each run of results.json)."""
    if not runs:
        raise ValueError("plot_confusion: no runs")
    fig, axes = new_figure((3.1 * len(runs) + 0.6, 3.3), ncols=len(runs))
    for ax, (name, confusion) in zip(axes[0], runs.items()):
        counts = np.asarray(confusion["counts"], dtype=float)
        share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        sns.heatmap(share, ax=ax, annot=counts.astype(int), fmt="d", cmap="viridis", vmin=0, vmax=1, cbar=False,
                    square=True, xticklabels=confusion["labels"], yticklabels=confusion["labels"][: len(counts)],
                    annot_kws={"fontsize": 8})
        ax.set_xlabel("answered")
        ax.set_ylabel("gold" if ax is axes[0, 0] else "")
        ax.tick_params(axis="x", labelrotation=45, labelsize=8)
        ax.tick_params(axis="y", labelrotation=0, labelsize=8)
        ax.set_title(confusion_title(name, confusion), fontsize=9)
    fig.suptitle(f"`{family}`: which answer for which gold answer (colour: share of the row)", fontsize=10)
    return finish(fig)


__all__ = ["confusion_title", "plot_confusion"]
