"""Accuracy figures: grouped bars per question family (a bar is only worth reading next
to its chance level, so blind can be drawn as a line) and parameter counts per
component and preset.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import seaborn as sns
from matplotlib.figure import Figure

from vocolab.reporting.style import finish, human, new_figure


def plot_family_accuracy(runs: Mapping[str, Mapping[str, float]], chance: Mapping[str, float] | None = None,
                         families: Sequence[str] | None = None, title: str | None = None,
                         ax=None) -> Figure:
    """Grouped bars of accuracy per question family, one colour per run.

    `runs` maps a run's name (e.g. "blind", "best single frame") to its
    `{family: accuracy}` (the `per_family` of `vocolab.data.accuracy`). `chance`
    draws each family's chance level as a black line across its group: a bar is
    only worth reading next to what guessing gets. `families` fixes the order
    (default: first appearance). Bars carry their value in percent.
    """
    if not runs:
        raise ValueError("plot_family_accuracy: no runs")
    if families is None:
        families = []
        for per_family in runs.values():
            families += [f for f in per_family if f not in families]
    families = list(families)
    if not families:
        raise ValueError("plot_family_accuracy: no families")
    names = list(runs)
    width = 0.8 / len(names)
    x = np.arange(len(families))
    palette = sns.color_palette("colorblind", len(names))

    owned = ax is None
    if owned:
        fig, axes = new_figure((max(4.5, 0.7 * len(families) * (1 + 0.5 * len(names)) + 1.0), 3.6))
        ax = axes[0, 0]
    fig = ax.figure
    handles = []
    for j, name in enumerate(names):
        values = [runs[name].get(f) for f in families]
        xs = x - 0.4 + width * (j + 0.5)
        heights = [np.nan if v is None else v for v in values]
        handles.append(ax.bar(xs, heights, width * 0.92, label=name, color=palette[j]))
        for xi, v, f in zip(xs, values, families):
            if v is not None:  # above the chance line when that sits just over the bar
                level = (chance or {}).get(f, -1.0)
                y = max(v, level) if v < level < v + 0.06 else v
                ax.text(xi, y + 0.015, f"{100 * v:.0f}", ha="center", va="bottom", fontsize=7)
    marked = [(i, chance[f]) for i, f in enumerate(families) if chance and f in chance]
    for k, (i, level) in enumerate(marked):
        line = ax.hlines(level, i - 0.45, i + 0.45, color="black", lw=1.4, label="chance")
        if k == 0:
            handles.append(line)
    ax.set_xticks(x, labels=families)
    ax.set_ylim(0, 1.25)  # headroom: the legend sits above the 100% line
    ax.set_yticks(np.linspace(0, 1, 6), labels=[f"{v:.0%}" for v in np.linspace(0, 1, 6)])
    ax.set_ylabel("held-out accuracy")
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(handles=handles, fontsize=8, ncols=len(handles), loc="upper left", frameon=False)
    sns.despine(ax=ax)
    return finish(fig) if owned else fig


def plot_parameter_counts(report: Mapping[str, Mapping[str, int]]) -> Figure:
    """Grouped bars (log y) of parameters per component for each preset.

    Log scale because presets differ by orders of magnitude and the projector is
    tiny next to the LLM; each bar carries its count so no one reads a log axis.
    """
    presets = list(report)
    if not presets:
        raise ValueError("plot_parameter_counts: empty report")
    components: list[str] = []
    for counts in report.values():
        components += [c for c in counts if c not in components]
    width = 0.8 / len(components)
    x = np.arange(len(presets))
    palette = sns.color_palette("colorblind", len(components))
    fig, axes = new_figure((max(5.0, 1.9 * len(presets) + 1.5), 4.0))
    ax = axes[0, 0]
    for j, comp in enumerate(components):
        values = [report[p].get(comp) for p in presets]
        xs = x - 0.4 + width * (j + 0.5)
        heights = [v if v else np.nan for v in values]  # 0 cannot sit on a log axis
        ax.bar(xs, heights, width * 0.95, label=comp, color=palette[j])
        for xi, v in zip(xs, values):
            if v:
                ax.text(xi, v * 1.15, human(v), ha="center", va="bottom", fontsize=7, rotation=90)
    ax.set_yscale("log")
    ax.set_xticks(x, labels=presets)
    ax.set_ylabel("parameters (log scale)")
    ax.set_title("Parameters per component and preset", fontsize=10)
    top = max((v for c in report.values() for v in c.values() if v), default=10)
    ax.set_ylim(top=top * 12)
    ax.legend(fontsize=8, ncols=min(4, len(components)), loc="upper left", frameon=False)
    sns.despine(ax=ax)
    return finish(fig)


__all__ = ["plot_family_accuracy", "plot_parameter_counts"]
