"""Cost figures: Table 7 as bars (answering FLOPs, latency, cache bytes) and the VoCo
cache size against K (log-log: the size is linear in K, and the gap to the full cache
*is* the compression factor).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.ticker
import seaborn as sns
from matplotlib.figure import Figure

from vocolab.reporting.style import finish, human, new_figure


def plot_inference_costs(cost: Mapping) -> Figure:
    """Table 7 as bars on linear axes: answering FLOPs, median latency and cache bytes per
    setting; the cache bars carry their size and their fraction of the full cache."""
    names = {"no_caching": "no caching", "full_caching": "full caching", "voco_caching": "VoCo caching"}
    settings = cost["settings"]
    fig, axes = new_figure((11, 3.4), 1, 3)
    panels = [("FLOPs to answer", lambda r: r["flops"]), ("latency, median (ms)", lambda r: r["latency_ms"]["median"]),
              ("cache size (bytes)", lambda r: r["cache_bytes"])]
    colors = sns.color_palette("deep", 3)
    for ax, (label, get) in zip(axes[0], panels):
        values = [get(settings[k]) for k in names]
        bars = ax.bar(list(names.values()), values, color=colors)
        # every panel linear: a bar on a log axis starts at an arbitrary floor, so a VoCo
        # cache of 1/65 of the full one would look empty or misstate the ratio; the cache
        # panel instead prints each size and its fraction of the full cache on the bar
        full = settings["full_caching"]["cache_bytes"] if label.startswith("cache") else 0
        for bar, value in zip(bars, values):
            x = bar.get_x() + bar.get_width() / 2
            text = human(value) if value >= 1000 else f"{value:.3g}"
            if full:
                text = "none" if value <= 0 else f"{human(value)}B\n{value / full:.2g} of full"
            ax.annotate(text, (x, value), xytext=(0, 2), textcoords="offset points", ha="center", va="bottom",
                        fontsize=8)
        ax.set_title(label, fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
        if max(values) > 0:  # room for the labels
            ax.set_ylim(top=(1.3 if full else 1.12) * max(values))
        if label.startswith("FLOPs") or full:
            ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: human(v)))
    fig.suptitle(f"one image, one question: V={cost['image_tokens']} image tokens, K={cost['voco_tokens']} "
                 f"VoCo, {cost['question_tokens']} question tokens ({cost['device']})", fontsize=10)
    return finish(fig)


def plot_cache_bytes(ks: Sequence[int], voco_bytes: Sequence[float], full_bytes: float, *,
                     image_tokens: int | None = None, title: str | None = None, ax=None) -> Figure:
    """Bytes of a VoCo cache against K (log-log), with the full cache as a horizontal line.

    `voco_bytes[i]` is the size of the cache compressed into `ks[i]` VoCo tokens (e.g.
    `compress(model, pixels, k).nbytes`); `full_bytes` that of the cache keeping every
    prefix token (`full_cache(...)`). Log-log because the size is linear in K: the points
    lie on a line of slope 1, and the vertical gap to the full-cache line *is* the
    compression factor. Each point is annotated with V/K when `image_tokens` (V) is
    given, else with the measured ratio full / VoCo bytes.
    """
    ks, sizes = [int(k) for k in ks], [float(b) for b in voco_bytes]
    if not ks or len(ks) != len(sizes):
        raise ValueError(f"plot_cache_bytes: {len(ks)} values of K for {len(sizes)} cache sizes")
    if min(ks) < 1 or min(sizes) <= 0 or full_bytes <= 0:
        raise ValueError("plot_cache_bytes: K >= 1 and positive byte counts are required (log axes)")
    owned = ax is None
    if owned:
        fig, axes = new_figure((5.6, 3.8))
        ax = axes[0, 0]
    fig = ax.figure
    blue, orange = sns.color_palette("colorblind", 2)
    ax.plot(ks, sizes, marker="o", color=blue, label="VoCo cache (K tokens)")
    ax.axhline(full_bytes, color=orange, ls="--", lw=1.5, label=f"full cache ({human(full_bytes)}B)")
    for k, b in zip(ks, sizes):
        note = f"V/K={image_tokens / k:.3g}" if image_tokens else f"{full_bytes / b:.3g}x"
        ax.annotate(note, (k, b), textcoords="offset points", xytext=(0, -13), ha="center", fontsize=7)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(ks, labels=[str(k) for k in ks])
    ax.minorticks_off()
    low, high = min(sizes + [full_bytes]), max(sizes + [full_bytes])
    ax.set_ylim(low / 3, high * 3)
    ax.set_xlabel("K (VoCo tokens kept per image)")
    ax.set_ylabel("cache size (bytes, log scale)")
    ax.set_title(title or "cache size grows linearly with K", fontsize=10)
    ax.legend(fontsize=8, loc="lower right", frameon=False)
    sns.despine(ax=ax)
    return finish(fig) if owned else fig


__all__ = ["plot_cache_bytes", "plot_inference_costs"]
