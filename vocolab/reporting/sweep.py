"""The sweep's figures and table, each drawn from a results body (never from memory),
so the committed figures can always be redrawn from the committed results file.

* `plot_retention_vs_tokens`: VoCo-LLaMA's Table 2 in miniature (retention against K);
* `plot_accuracy_vs_flops`: what each method buys per FLOP spent answering a question,
  with the Pareto front;
* `plot_family_heatmap`: which kinds of visual information survive compression to K = 1;
* `sweep_markdown`: the table of the study's `table.md` (and RESULTS.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import seaborn as sns

from vocolab.reporting.results import write_report
from vocolab.reporting.style import finish, human, new_figure

BOUNDS = ("upper", "lower", "blind")


def cells(body: dict) -> list[dict]:
    return [r for r in body["runs"] if r["name"] not in BOUNDS]


def _bound(body: dict, name: str) -> dict:
    return next(r for r in body["runs"] if r["name"] == name)


def _methods(body: dict) -> list[str]:
    order = body.get("sweep", {}).get("methods") or []
    seen = [m for m in order if any(r["method"] == m for r in cells(body))]
    return seen + sorted({r["method"] for r in cells(body)} - set(seen))


def _palette(methods: Sequence[str]) -> dict:
    return dict(zip(methods, sns.color_palette("tab10", len(methods))))


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both cost (lower) and accuracy (higher),
    sorted by cost."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -np.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def plot_retention_vs_tokens(body: dict, ax=None):
    """Retention against K (log axis), one line per method; K = V is the upper bound."""
    owned = ax is None
    if owned:
        fig, axes = new_figure((6.4, 4.0))
        ax = axes[0, 0]
    v = _bound(body, "upper")["tokens"]
    colors = _palette(_methods(body))
    for method in _methods(body):
        rows = sorted((r for r in cells(body) if r["method"] == method), key=lambda r: r["tokens"])
        ks = [r["tokens"] for r in rows]
        ret = [np.nan if r.get("retention") is None else r["retention"] for r in rows]
        style = dict(color=colors[method], label=method)
        if method == "prumerge":
            ax.scatter(ks, ret, marker="*", s=140, zorder=3, **style)
        else:
            ax.plot(ks + [v], ret + [1.0], marker="o", ms=4, **style)
    ax.axhline(1.0, color="0.3", lw=0.8, ls="--")
    ax.axhline(0.0, color="0.3", lw=0.8, ls=":")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("visual tokens per image K (log scale; rightmost = all V, the upper bound)")
    ax.set_ylabel("retention (upper = 1, lower = 0)")
    ax.set_title("retention against compression (held-out)")
    ax.legend(fontsize=8, ncol=2, frameon=False)
    return finish(ax.figure)


def plot_accuracy_vs_flops(body: dict):
    """Accuracy against inference FLOPs, every cell and the upper bound, with the Pareto
    front: left per answered question with the image side cached where the method allows
    it (VoCo's case: many questions per image), right for one new image and one question."""
    fig, axes = new_figure((11.5, 4.4), ncols=2)
    for ax, key, label in ((axes[0, 0], "question_flops", "FLOPs per further question (image side cached)"),
                           (axes[0, 1], "prefill_flops", "FLOPs for a new image + question (no cache)")):
        _accuracy_cost_panel(body, ax, key, label)
    axes[0, 0].legend(fontsize=7, ncol=2, frameon=False)
    fig.suptitle("accuracy against inference cost (marker size ~ log2 K)")
    return finish(fig)


def _accuracy_cost_panel(body: dict, ax, key: str, label: str) -> None:
    colors = _palette(_methods(body))
    upper = _bound(body, "upper")
    rows = [r for r in cells(body) + [upper] if r.get("cost", {}).get(key) is not None]
    points = [(r["cost"][key], r["accuracy"]) for r in rows]
    for (x, y), r in zip(points, rows):
        ax.scatter(x, y, color="black" if r is upper else colors[r["method"]], zorder=3,
                   s=18 + 6 * np.log2(max(1, r["tokens"])), marker="s" if r is upper else "o")
    front = pareto_front(points)
    ax.plot([points[i][0] for i in front], [points[i][1] for i in front], color="0.2", lw=1, ls="--",
            label="Pareto front", zorder=2)
    for i in front:
        ax.annotate(rows[i]["name"], points[i], fontsize=7, xytext=(4, -8), textcoords="offset points")
    for method, color in colors.items():
        ax.scatter([], [], color=color, label=method)
    ax.scatter([], [], color="black", marker="s", label="upper (all V)")
    ax.axhline(_bound(body, "blind")["accuracy"], color="0.5", lw=0.8, ls=":", label="blind")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(lambda x, _: human(x))
    ax.xaxis.set_minor_formatter(lambda x, _: "")
    ax.set_xlabel(label + " (log)")
    ax.set_ylabel("held-out exact match")


def plot_family_heatmap(body: dict, k: int = 1, ax=None):
    """Accuracy per question family and method at K = `k` (PruMerge at its own K), with
    the bounds as reference rows."""
    families = body["eval"]["families"]
    rows = [r for r in cells(body) if r["tokens"] == k or r["method"] == "prumerge"]
    rows = [_bound(body, "upper")] + rows + [_bound(body, n) for n in ("lower", "blind")]
    data = np.array([[r["per_family"].get(f, np.nan) for f in families] for r in rows])
    owned = ax is None
    if owned:
        fig, axes = new_figure((1.2 * len(families) + 2.5, 0.38 * len(rows) + 1.2))
        ax = axes[0, 0]
    names = [f"{r['name']} (K~{r['tokens']:g})" if r["method"] == "prumerge" else r["name"] for r in rows]
    sns.heatmap(data, annot=True, fmt=".2f", cmap="viridis", vmin=0, vmax=1, xticklabels=families,
                yticklabels=names, cbar_kws={"label": "exact match"}, ax=ax)
    ax.set_title(f"what survives compression to K = {k} (held-out accuracy per family)")
    return finish(ax.figure)


def _cell(r: dict) -> str:
    ret = r.get("retention")
    return f"{r['accuracy']:.3f} ({'-' if ret is None else f'{ret:.2f}'})"


def sweep_markdown(body: dict) -> str:
    """Retention per method and K, then a K = 1 cost table."""
    ks = sorted({r["tokens"] for r in cells(body) if r["method"] != "prumerge"})
    head = ["method", "trained", *[f"K={k}" for k in ks]]
    lines = ["Accuracy (retention) on held-out scenes:", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method in _methods(body):
        rows = {r["tokens"]: r for r in cells(body) if r["method"] == method}
        trained = next(iter(rows.values())).get("trainable")
        if method == "prumerge":
            r = next(iter(rows.values()))
            row = [f"prumerge (adaptive, K={r['tokens']:.1f} on average)", "no",
                   _cell(r)] + [""] * (len(ks) - 1)
        else:
            row = [method, "yes" if trained else "no"] + [
                _cell(rows[k]) if k in rows else "-" for k in ks]
        lines.append("| " + " | ".join(row) + " |")
    upper, lower, blind = (_bound(body, n) for n in BOUNDS)
    lines += ["", f"Bounds: upper (all {upper['tokens']} tokens) {upper['accuracy']:.3f}, "
                  f"lower (upper model under the voco mask) {lower['accuracy']:.3f}, blind {blind['accuracy']:.3f}.",
              "", "Cost at K = 1 (PruMerge at its own K), one image and one question:", "",
              "| method | visual tokens | new params | prefill FLOPs (measured / analytic) | "
              "FLOPs per question | cache | latency |", "|---|---|---|---|---|---|---|"]
    for r in [upper] + [r for r in cells(body) if r["tokens"] == 1 or r["method"] == "prumerge"]:
        c = r.get("cost", {})
        cache = "recomputed per question" if c.get("cache_bytes") is None else f"{c['cache_bytes']:,} B"
        lines.append(f"| {r['name']} | {c.get('visual_tokens', r['tokens'])} | {c.get('compressor_params', 0):,} | "
                     f"{human(c.get('prefill_flops', 0))} / {human(c.get('prefill_flops_analytic', 0))} | "
                     f"{human(c.get('question_flops', 0))} | {cache} | {c.get('latency_ms', 0):.2f} ms |")
    return "\n".join(lines)


def write_sweep_outputs(body: dict, out: Path) -> None:
    """results.json, table.md and the three figures, all from the results body."""
    write_report(out, body, sweep_markdown(body), {"retention_vs_tokens.png": lambda: plot_retention_vs_tokens(body),
                                                   "accuracy_vs_flops.png": lambda: plot_accuracy_vs_flops(body),
                                                   "family_heatmap.png": lambda: plot_family_heatmap(body)})


__all__ = [
    "BOUNDS", "cells", "pareto_front", "plot_accuracy_vs_flops", "plot_family_heatmap", "plot_retention_vs_tokens",
    "sweep_markdown", "write_sweep_outputs",
]
