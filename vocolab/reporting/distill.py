"""The distillation study's report: the objectives table and the retention figure,
drawn from its results file.
"""

from __future__ import annotations

from pathlib import Path

from vocolab.reporting.results import write_report


def distill_markdown(body: dict) -> str:
    families = body["eval"]["families"]
    head = ["objective", "K", "accuracy", "retention", *families]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in body["runs"]:
        if "objective" not in r:
            continue
        ret = r.get("retention")
        lines.append("| " + " | ".join([r["objective"], str(r["tokens"]), f"{r['accuracy']:.3f}",
                                        "-" if ret is None else f"{ret:.2f}",
                                        *(f"{r['per_family'].get(f, 0):.2f}" for f in families)]) + " |")
    by = {r["name"]: r for r in body["runs"]}
    lines += ["", f"Bounds: upper {by['upper']['accuracy']:.3f}, lower {by['lower']['accuracy']:.3f}, "
                  f"blind {by['blind']['accuracy']:.3f}."]
    return "\n".join(lines)


def plot_distill(body: dict):
    """Retention per objective, one group per K."""
    import numpy as np
    import seaborn as sns

    from vocolab.reporting.style import finish, new_figure

    rows = [r for r in body["runs"] if "objective" in r]
    objectives = list(dict.fromkeys(r["objective"] for r in rows))
    ks = sorted({r["tokens"] for r in rows})
    fig, axes = new_figure((1.6 * len(objectives) * len(ks) / 2 + 3, 3.6))
    ax = axes[0, 0]
    width = 0.8 / len(objectives)
    colors = sns.color_palette("colorblind", len(objectives))
    for i, objective in enumerate(objectives):
        found = [next((r.get("retention") for r in rows if r["objective"] == objective and r["tokens"] == k),
                      None) for k in ks]
        values = [np.nan if v is None else v for v in found]  # undefined retention: no bar, labelled n/a
        bars = ax.bar(np.arange(len(ks)) + (i - (len(objectives) - 1) / 2) * width, values, width,
                      color=colors[i], label=objective)
        ax.bar_label(bars, labels=["n/a" if v is None else f"{v:.2f}" for v in found], fontsize=7)
    ax.set_xticks(np.arange(len(ks)), [f"K = {k}" for k in ks])
    ax.axhline(1.0, color="0.3", lw=0.8, ls="--")
    ax.set_ylabel("retention (held-out)")
    ax.set_title("VoCo training objectives, same steps and seed")
    ax.legend(fontsize=8, frameon=False)
    return finish(fig)


def write_distill_outputs(body: dict, out: Path, echo: bool = True) -> None:
    """results.json, table.md and objectives.png, all from the results body."""
    write_report(out, body, distill_markdown(body), {"objectives.png": lambda: plot_distill(body)}, echo)


__all__ = ["distill_markdown", "plot_distill", "write_distill_outputs"]
