"""The scaling study's report, drawn from its results file: the grid of errors, the fitted
constants next to the paper's, the held-out checks and the optimal (N, V) per budget
(`scaling_markdown`); error against FLOPs per LLM size with the law's and the measured
frontiers (`plot_error_vs_flops`); the fit's residuals (`plot_fit_residuals`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vocolab.evaluation.scaling_analysis import grid_cells, law_from
from vocolab.evaluation.scaling_budget import frontier, inference_flops, optimal_allocation
from vocolab.evaluation.scaling_law import Law
from vocolab.reporting.results import write_report


def _fmt_flops(x: float | None) -> str:
    from vocolab.reporting.style import human

    return "-" if x is None else human(x)


def _interval(boot: dict, name: str, fmt: str = ".3g") -> str:
    b = boot.get(name)
    return "" if b is None else f" [{b['p2.5']:{fmt}}, {b['p97.5']:{fmt}}]"


def scaling_markdown(body: dict) -> str:
    """The grid, the fitted constants with bootstrap intervals next to the paper's, the
    held-out checks and the optimal (N, V) per budget."""
    s = body["scaling"]
    cells = [r for r in body["runs"] if "llm_params" in r]
    sizes = sorted({(r["llm_params"], r["size"]) for r in cells})
    ks = sorted({r["tokens"] for r in cells})
    head = ["LLM", "N (LLM params)", "method", *[f"V={k}" for k in ks]]
    lines = [f"Held-out error (1 - exact match, {body['eval']['examples']} questions); V = visual tokens the text "
             f"sees (V={s['image_tokens']}: the size's upper-bound model, all patches):", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n, size in sizes:
        for method in s["methods"]:
            by_k = {r["tokens"]: r for r in cells if r["size"] == size and r["method"] in (method, "full")}
            lines.append("| " + " | ".join([size, f"{n:,}", method] + [
                f"{by_k[k]['error']:.3f}" if k in by_k else "-" for k in ks]) + " |")
    blind = next((r for r in body["runs"] if r["name"] == "blind"), None)
    if blind is not None:
        lines += ["", f"Blind (question only, no image): error {1 - blind['accuracy']:.3f}."]
    lines += ["", "Fit of Y = A N^-alpha V^-beta + D (bounded; 95% bootstrap intervals over grid cells). "
                  "A is for N in billions, as the paper quotes it; A_ref for N in multiples of n_ref:", "",
              "| law | cells | A (N in 1e9) | A_ref (n_ref) | alpha | beta | D | alpha/beta | rmse | at bound |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for method, f in body["fit"]["laws"].items():
        if "law" not in f:
            lines.append(f"| {method} | {f['cells']} | skipped: {f['skipped']} |||||||| ")
            continue
        law, boot = f["law"], f["bootstrap"]
        ratio = "-" if f["alpha_over_beta"] is None else f"{f['alpha_over_beta']:.2g}"
        lines.append(f"| {method} | {f['cells']} | {f['A_per_billion']:.3g} | "
                     f"{law['A_ref']:.3g}{_interval(boot, 'A_ref')} ({law['n_ref']:.0e}) | "
                     f"{law['alpha']:.3f}{_interval(boot, 'alpha', '.3f')} | "
                     f"{law['beta']:.3f}{_interval(boot, 'beta', '.3f')} | "
                     f"{law['D']:.3f}{_interval(boot, 'D', '.3f')} | "
                     f"{ratio} | {law['rmse']:.4f} | {', '.join(law['at_bound']) or '-'} |")
    p = body["fit"]["paper"]
    lines.append(f"| paper | 4 N x 7 V | {p['A']} | - | {p['alpha']} | {p['beta']} | {p['D']} | "
                 f"{p['alpha'] / p['beta']:.2g} | - | - |")
    lines += ["", "Held-out checks (fit without the held-out cells, predict them):", "",
              "| law | held out | cells fitted / held | mean abs error | max abs error |", "|---|---|---|---|---|"]
    for method, f in body["fit"]["laws"].items():
        for check in f.get("heldout", {}).values():
            if "skipped" in check:
                lines.append(f"| {method} | {check['what']} | skipped: {check['skipped']} | | |")
            else:
                lines.append(f"| {method} | {check['what']} | {check['n_fit']} / {check['n_held']} | "
                             f"{check['abs_mean']:.3f} | {check['abs_max']:.3f} |")
    opt = body.get("optimal")
    if opt:
        lines += ["", f"Inference-optimal (N, V) per FLOPs budget (2 N (Q + V)), from the {opt['method']} law "
                      f"(grid of measured sizes x token counts) and the best measured cell (any method) "
                      f"that fits:", "",
                  "| text | Q | budget | law: N | law: V | predicted error | measured best | its error |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in opt["rows"]:
            m = r["measured"]
            law_cells = (f"{r['N']:,.0f} | {r['V']:g} | {r['error']:.3f}" if r["feasible"] else "- | - | -")
            lines.append(f"| {r['text']} | {r['Q']:.1f} | {_fmt_flops(r['budget'])} | {law_cells} | "
                         f"{'-' if m is None else m['name']} | {'-' if m is None else format(m['error'], '.3f')} |")
        f = body["fit"]["laws"][opt["method"]]
        lines += ["", "Closed-form optimum V* = beta Q / (alpha - beta) (any N): " + ", ".join(
            f"{q}: {v:.2f}" for q, v in f["optimal_tokens"].items()) + "."]
    lines += ["", "FLOPs per question, the paper's 2 N (Q + V) beside vocolab's measured prefill (one image, "
                  "one question, nothing cached: VoCo still runs all V patches through the LLM to fill its "
                  "cache):", "", "| cell | N | V | 2N(Q+V) | 2NV (Q=0) | measured prefill | per question, cached |",
              "|---|---|---|---|---|---|---|"]
    for r in sorted(cells, key=lambda r: (r["llm_params"], r["method"] != "full", r["method"], r["tokens"])):
        lines.append(f"| {r['name']} | {r['llm_params']:,} | {r['tokens']} | {_fmt_flops(r['flops_per_question'])} | "
                     f"{_fmt_flops(r['flops_per_question_cached'])} | {_fmt_flops(r.get('measured_flops'))} | "
                     f"{_fmt_flops(r.get('question_flops'))} |")
    return "\n".join(lines)


def _size_colors(body: dict) -> dict:
    import seaborn as sns

    sizes = [s for _, s in sorted({(r["llm_params"], r["size"]) for r in body["runs"] if "llm_params" in r})]
    return dict(zip(sizes, sns.color_palette("viridis", len(sizes))))


def _primary_law(body: dict) -> Law | None:
    f = body["fit"]["laws"].get(body["fit"]["primary"] or "", {})
    return law_from(f["law"]) if "law" in f else None


def plot_error_vs_flops(body: dict):
    """Error against log FLOPs per question, one colour per LLM size: the paper's 2N(Q+V)
    with the questions' Q and with cached text (Q = 0), then vocolab's measured prefill.
    Lines: measured VoCo (solid, K = V included) and QueCC (dashed, hollow); the fitted
    law per size (dotted, V continuous); the law's inference-optimal frontier (grey) and
    the measured Pareto frontier (black steps)."""
    from vocolab.reporting.style import finish, human, new_figure

    s = body["scaling"]
    q = s["question_tokens"]
    cells = [r for r in body["runs"] if "llm_params" in r]
    colors = _size_colors(body)
    law = _primary_law(body)
    fig, axes = new_figure((15.5, 4.6), 1, 3, sharey=True)
    panels = ((f"2 N (Q + V), Q = {q:.1f} (the questions)", lambda r: r["flops_per_question"], q),
              ("2 N V, Q = 0 (cached text)", lambda r: r["flops_per_question_cached"], 0.0),
              ("measured prefill, one image + one question", lambda r: r.get("measured_flops"), None))
    markers = {"voco": "o", "quecc": "s"}
    for ax, (title, x_of, q_panel) in zip(axes[0], panels):
        for size, color in colors.items():
            mine = [r for r in cells if r["size"] == size]
            upper = [r for r in mine if r["method"] == "full"]
            for method in s["methods"]:
                rows = sorted([r for r in mine if r["method"] == method] + upper, key=lambda r: r["tokens"])
                xs = [x_of(r) for r in rows]
                if not rows or any(x is None for x in xs):
                    continue
                solid = method == (body["fit"]["primary"] or "voco")
                line = ("-" if solid else "--") if q_panel is not None else "none"  # measured: no order in x
                ax.plot(xs, [r["error"] for r in rows], color=color, lw=1.4 if solid else 1.0,
                        ls=line, marker=markers.get(method, "^"), ms=4,
                        mfc=color if solid else "white", zorder=3)
            for r in upper:
                if x_of(r) is not None:
                    ax.scatter(x_of(r), r["error"], marker="*", s=90, color=color, edgecolor="black", lw=0.5, zorder=5)
            if law is not None and q_panel is not None and mine:
                n = mine[0]["llm_params"]
                v = np.geomspace(1, s["image_tokens"], 50)
                ax.plot(inference_flops(n, q_panel, v), law.predict(n, v), color=color, lw=0.9, ls=":")
        if q_panel is not None:
            pts = [{"flops": x_of(r), "error": r["error"]} for r in cells]
            front = frontier(pts)
            ax.step([p["flops"] for p in front], [p["error"] for p in front], where="post", color="black", lw=1.2,
                    zorder=4)
            if law is not None:
                ns = sorted({r["llm_params"] for r in cells})
                lo = min(p["flops"] for p in pts)
                hi = max(p["flops"] for p in pts)
                budgets = np.geomspace(lo, hi, 80)
                rows = optimal_allocation(law, budgets, q_panel, ns, [1, s["image_tokens"]], continuous=True,
                                          V_max=s["image_tokens"])
                best = [row["continuous"] for row in rows]
                keep = [(b, c["error"]) for b, c in zip(budgets, best) if c is not None]
                if keep:
                    ax.plot(*zip(*keep), color="0.55", lw=3, alpha=0.45, zorder=1)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(lambda x, _: human(x))
        ax.xaxis.set_minor_formatter(lambda x, _: "")
        ax.set_xlabel(f"FLOPs per question: {title}")
        ax.grid(alpha=0.3, which="both", lw=0.5)
    axes[0, 0].set_ylabel("held-out error (1 - exact match)")
    for size, color in colors.items():
        n = next(r["llm_params"] for r in cells if r["size"] == size)
        axes[0, 0].plot([], [], color=color, lw=2, label=f"{size} (N={human(n)})")
    for method in s["methods"]:
        solid = method == (body["fit"]["primary"] or "voco")
        axes[0, 1].plot([], [], color="0.3", ls="-" if solid else "--", marker=markers.get(method, "^"),
                        mfc="0.3" if solid else "white", label=f"{method} (K < V) + upper (V)")
    axes[0, 1].scatter([], [], marker="*", s=90, color="0.3", edgecolor="black", lw=0.5,
                       label=f"upper bound (all V = {s['image_tokens']} tokens)")
    axes[0, 1].plot([], [], color="0.3", ls=":", label="fitted law (V continuous)")
    axes[0, 1].plot([], [], color="0.55", lw=3, alpha=0.45, label="law's optimal frontier")
    axes[0, 1].step([], [], color="black", label="measured frontier")
    axes[0, 0].legend(fontsize=7, frameon=False)
    axes[0, 1].legend(fontsize=7, frameon=False)
    if law is not None:
        fig.suptitle(f"error against inference compute ({body['fit']['primary']} law: alpha={law.alpha:.3f}, "
                     f"beta={law.beta:.3f}; paper: 0.077, 0.015)", fontsize=10)
    return finish(fig)


def plot_fit_residuals(body: dict):
    """Left: predicted against measured error (fitted cells, and the largest LLM's cells
    predicted by the fit that did not see them). Right: error against V per size with the
    law's curves."""
    from vocolab.reporting.style import finish, new_figure

    s = body["scaling"]
    fig, axes = new_figure((11, 4.3), 1, 2)
    left, right = axes[0]
    primary = body["fit"]["primary"]
    law = _primary_law(body)
    colors = _size_colors(body)
    cells = [r for r in grid_cells(body["runs"], primary or "voco")]
    if law is None:
        left.text(0.5, 0.5, "no fit: " + body["fit"]["laws"].get(primary or "", {}).get("skipped", ""),
                  ha="center", va="center", wrap=True, fontsize=8, transform=left.transAxes)
    else:
        for r in cells:
            left.scatter(r["error"], law.predict(r["llm_params"], r["tokens"]), color=colors[r["size"]], s=22, zorder=3)
        check = body["fit"]["laws"][primary]["heldout"]["largest_n"]
        if "predicted" in check:
            left.scatter(check["actual"], check["predicted"], marker="x", color="crimson", s=40, zorder=4,
                         label=f"largest LLM, predicted by the fit without it (mean |err| {check['abs_mean']:.3f})")
            left.legend(fontsize=7, frameon=False, loc="upper left")
        lo = min(r["error"] for r in cells) - 0.02
        hi = max(r["error"] for r in cells) + 0.02
        left.plot([lo, hi], [lo, hi], color="0.4", lw=0.8, ls="--")
        left.set_title(f"{primary} law: rmse {law.rmse:.4f} over {law.n_points} cells", fontsize=9)
    left.set_xlabel("measured error")
    left.set_ylabel("predicted error")
    for size, color in colors.items():
        mine = sorted([r for r in body["runs"] if r.get("size") == size], key=lambda r: r["tokens"])
        for method in s["methods"]:
            rows = [r for r in mine if r["method"] == method]
            solid = method == (primary or "voco")
            right.plot([r["tokens"] for r in rows], [r["error"] for r in rows], ls="none",
                       marker="o" if solid else "s", color=color, mfc=color if solid else "white", ms=5)
        for r in mine:
            if r["method"] == "full":
                right.scatter(r["tokens"], r["error"], marker="*", s=90, color=color, edgecolor="black", lw=0.5,
                              zorder=4)
        if law is not None and mine:
            v = np.geomspace(1, s["image_tokens"], 50)
            right.plot(v, law.predict(mine[0]["llm_params"], v), color=color, lw=1, label=size)
    right.set_xscale("log", base=2)
    right.set_xlabel("visual tokens V (log; filled = " + (primary or "voco") + ", hollow = other methods, "
                     "star = upper bound)")
    right.set_ylabel("held-out error")
    right.set_title("error against V per LLM size, with the fitted law", fontsize=9)
    right.legend(fontsize=7, frameon=False)
    return finish(fig)


def write_scaling_outputs(body: dict, out: Path, echo: bool = True) -> None:
    """results.json, table.md and the two figures, all from the results body."""
    write_report(out, body, scaling_markdown(body), {"error_vs_flops.png": lambda: plot_error_vs_flops(body),
                                                     "fit_residuals.png": lambda: plot_fit_residuals(body)}, echo)


__all__ = ["plot_error_vs_flops", "plot_fit_residuals", "scaling_markdown", "write_scaling_outputs"]
