"""Every figure vocolab draws, one function each, each returning its `Figure`.

Notebooks tell the story and call these functions (the Annotated Transformer's
`example_mask()` style) so that a figure in a notebook, in the README and in a
paper is drawn by the same tested code and never drifts between copies.

Display rules, chosen so a figure shows exactly once wherever it is made:

* a function that creates its own figure returns it; in a notebook with the
  inline backend the figure is detached from pyplot before it is returned, so
  it is shown when it is the cell's value (or passed to `display`) and not a
  second time by the backend's end-of-cell flush;
* given `ax=`, a function draws into the caller's axes and leaves the figure alone;
* with no display (a CI runner, an SSH session) the non-interactive "Agg"
  backend is chosen at import, unless the user chose one (`MPLBACKEND`) or we
  run inside a notebook kernel, whose inline backend is respected.
"""

from __future__ import annotations

import math
import os
import sys
import textwrap
from pathlib import Path
from typing import Mapping, Sequence

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

import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from .layout import Layout  # noqa: E402
from .masks import build_mask  # noqa: E402

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


# -- helpers ---------------------------------------------------------------------------


def _inline_backend() -> bool:
    return "inline" in str(matplotlib.get_backend()).lower()


def _new_figure(figsize: tuple[float, float], nrows: int = 1, ncols: int = 1, **kw):
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, layout="constrained", squeeze=False, **kw)
    return fig, axes


def _finish(fig: Figure) -> Figure:
    """Detach a figure we created from pyplot under the inline backend (see module doc)."""
    if _inline_backend():
        plt.close(fig)
    return fig


def _human(n: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{int(n)}"


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


# -- masks -----------------------------------------------------------------------------


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
        fig, axes = _new_figure((5.4 if legend else 4.6, 4.6))
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
    return _finish(fig) if owned else fig


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
    fig, axes = _new_figure((4.2 * n, 4.9), 1, n)
    for i, (mode, ax) in enumerate(zip(modes, axes[0])):
        mask = build_mask([layout], mode, length)
        plot_mask(mask, layout, title=MODE_CAPTIONS.get(mode, mode), ax=ax, legend=False)
        if i:
            ax.set_ylabel("")
    fig.suptitle(describe_layout(layout, length), fontsize=10)
    fig.legend(handles=_legend_handles(), loc="outside lower center", ncols=2, fontsize=9,
               frameon=False)
    return _finish(fig)


# -- scenes and clips ------------------------------------------------------------------


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
    wrapped = [textwrap.fill(str(t), wrap) for t in titles] if titles is not None else None
    lines = max((w.count("\n") + 1 for w in wrapped), default=0) if wrapped else 0
    fig, axes = _new_figure((2.5 * cols, rows * (2.4 + 0.15 * lines)), rows, cols)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            fig.delaxes(ax)
            continue
        ax.imshow(np.asarray(images[i]), interpolation="nearest")
        ax.set_axis_off()
        if wrapped:
            ax.set_title(wrapped[i], fontsize=7.5)
    return _finish(fig)


def plot_clip(frames: np.ndarray, title: str | None = None) -> Figure:
    """The frames of one clip in a row, labelled t=0..T-1 (time runs left to right)."""
    frames = np.asarray(frames)
    if frames.ndim != 4:
        raise ValueError(f"plot_clip: expected [T, H, W, 3], got shape {frames.shape}")
    t = frames.shape[0]
    fig, axes = _new_figure((2.0 * t, 2.5 if title else 2.2), 1, t)
    for i, ax in enumerate(axes[0]):
        ax.imshow(frames[i], interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(f"t={i}", fontsize=9)
    if title:
        fig.suptitle(textwrap.fill(title, 25 * t), fontsize=10)
    return _finish(fig)


# -- accuracy --------------------------------------------------------------------------


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
        fig, axes = _new_figure((max(4.5, 0.7 * len(families) * (1 + 0.5 * len(names)) + 1.0), 3.6))
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
    return _finish(fig) if owned else fig


# -- models ----------------------------------------------------------------------------


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
    fig, axes = _new_figure((max(5.0, 1.9 * len(presets) + 1.5), 4.0))
    ax = axes[0, 0]
    for j, comp in enumerate(components):
        values = [report[p].get(comp) for p in presets]
        xs = x - 0.4 + width * (j + 0.5)
        heights = [v if v else np.nan for v in values]  # 0 cannot sit on a log axis
        ax.bar(xs, heights, width * 0.95, label=comp, color=palette[j])
        for xi, v in zip(xs, values):
            if v:
                ax.text(xi, v * 1.15, _human(v), ha="center", va="bottom", fontsize=7, rotation=90)
    ax.set_yscale("log")
    ax.set_xticks(x, labels=presets)
    ax.set_ylabel("parameters (log scale)")
    ax.set_title("Parameters per component and preset", fontsize=10)
    top = max((v for c in report.values() for v in c.values() if v), default=10)
    ax.set_ylim(top=top * 12)
    ax.legend(fontsize=8, ncols=min(4, len(components)), loc="upper left", frameon=False)
    sns.despine(ax=ax)
    return _finish(fig)


# -- output ----------------------------------------------------------------------------


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

    fig, axes = _new_figure((10, 3.6), 1, 2)
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
    return _finish(fig)


def plot_inference_costs(cost: Mapping) -> Figure:
    """Table 7 as bars: answering FLOPs, median latency and cache bytes per setting."""
    names = {"no_caching": "no caching", "full_caching": "full caching", "voco_caching": "VoCo caching"}
    settings = cost["settings"]
    fig, axes = _new_figure((11, 3.4), 1, 3)
    panels = [("FLOPs to answer", lambda r: r["flops"]), ("latency, median (ms)", lambda r: r["latency_ms"]["median"]),
              ("cache size (bytes)", lambda r: r["cache_bytes"])]
    colors = sns.color_palette("deep", 3)
    for ax, (label, get) in zip(axes[0], panels):
        values = [get(settings[k]) for k in names]
        bars = ax.bar(list(names.values()), values, color=colors)
        # bytes span orders of magnitude (V/K): log scale there; FLOPs and time stay linear,
        # because a bar on a log axis starts at an arbitrary floor and misstates ratios
        log = label.startswith("cache")
        if log:
            ax.set_yscale("log")
        for bar, value in zip(bars, values):
            x = bar.get_x() + bar.get_width() / 2
            if log and value <= 0:  # nothing cached: no bar on a log axis, say so
                ax.annotate("none", (x, 0), xycoords=("data", "axes fraction"), xytext=(0, 3),
                            textcoords="offset points", ha="center", va="bottom", fontsize=8)
                continue
            ax.annotate(_human(value) if value >= 1000 else f"{value:.3g}", (x, value), ha="center", va="bottom",
                        fontsize=8)
        ax.set_title(label, fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
        if max(values) > 0:  # room for the labels
            ax.set_ylim(top=(3 if log else 1.12) * max(values))
        if label.startswith("FLOPs"):
            ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: _human(v)))
    fig.suptitle(f"one image, one question: V={cost['image_tokens']} image tokens, K={cost['voco_tokens']} "
                 f"VoCo, {cost['question_tokens']} question tokens ({cost['device']})", fontsize=10)
    return _finish(fig)


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
        fig, axes = _new_figure((5.6, 3.8))
        ax = axes[0, 0]
    fig = ax.figure
    blue, orange = sns.color_palette("colorblind", 2)
    ax.plot(ks, sizes, marker="o", color=blue, label="VoCo cache (K tokens)")
    ax.axhline(full_bytes, color=orange, ls="--", lw=1.5, label=f"full cache ({_human(full_bytes)}B)")
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
    return _finish(fig) if owned else fig


def plot_attention_overlay(image: np.ndarray, weights, grid: tuple[int, int], ax=None,
                           title: str | None = None) -> Figure:
    """A patch-grid heatmap stretched over the scene, each cell covering its patch: where
    in the image some token looks."""
    owned = ax is None
    if owned:
        fig, axes = _new_figure((2.4, 2.4))
        ax = axes[0, 0]
    h, w = image.shape[:2]
    weights = torch.as_tensor(weights).float().reshape(grid).numpy()
    ax.imshow(image, interpolation="nearest")
    ax.imshow(weights, extent=(-0.5, w - 0.5, h - 0.5, -0.5), cmap="magma", alpha=0.6, interpolation="nearest",
              vmin=0)
    if title:
        ax.set_title(title, fontsize=8)
    ax.set_axis_off()
    return _finish(ax.figure)


def plot_distill_attention(image: np.ndarray, teacher: Mapping, student: Mapping) -> Figure:
    """One row per LLM layer: the teacher's text->image attention over the scene, the
    student's text->VoCo attention per VoCo token, and each VoCo token's attention over
    the scene. `teacher`/`student` are `vocolab.distill.mean_attention` outputs."""
    t_image, s_voco, voco_image = teacher["text_to_image"], student["text_to_voco"], student["voco_to_image"]
    layers, k = s_voco.shape
    fig, axes = _new_figure((1.9 * (2 + k), 1.9 * layers), nrows=layers, ncols=2 + k)
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
    return _finish(fig)


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


__all__ = [
    "ATTEND_COLOR", "BLOCKED_COLOR", "describe_layout", "layout_segments", "plot_attention_overlay",
    "plot_cache_bytes", "plot_clip", "plot_distill_attention", "plot_family_accuracy", "plot_images", "plot_inference_costs", "plot_mask", "plot_mask_modes",
    "plot_parameter_counts", "plot_training_curves", "save_figure", "stage_losses",
]
