"""The mixture-of-depths study's report: accuracy, training FLOPs, step time and KV
cache per variant against full computation, drawn from its results file.
"""

from __future__ import annotations

from pathlib import Path

from vocolab.reporting.results import write_report


def mod_markdown(body: dict) -> str:
    families = body["eval"]["families"]
    head = ["variant", "accuracy", *families, "step ms", "train GFLOPs/step", "vs full", "activations MB",
            "KV tokens", "KV vs full"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in body["runs"]:
        if "variant" not in r:
            continue
        c = r["cost"]
        lines.append("| " + " | ".join([
            r["variant"], f"{r['accuracy']:.3f}", *(f"{r['per_family'].get(f, 0):.2f}" for f in families),
            "-" if r.get("step_time_ms") is None else f"{r['step_time_ms']:.1f}",
            f"{c['train_flops_per_step'] / 1e9:.3f}", f"{c.get('train_flops_ratio', float('nan')):.2f}",
            f"{c['saved_activation_bytes'] / 2**20:.1f}", str(c["kv_tokens"]),
            f"{c.get('kv_ratio', float('nan')):.2f}"]) + " |")
    by = {r["name"]: r for r in body["runs"]}
    m = body["mod"]
    lines += ["", f"MoD: r = {m['r']} (k = {m['k_per_frame']} vision tokens per frame), layers {m['layers']} "
                  f"{m['mod_layers']}, {m['steps']} steps. Base (no clip fine-tuning) "
                  f"{by['base']['accuracy']:.3f}, blind {by['blind']['accuracy']:.3f}."]
    return "\n".join(lines)


def plot_mod(body: dict):
    """Accuracy, training FLOPs and step time relative to full computation, per variant."""
    import numpy as np
    import seaborn as sns

    from vocolab.reporting.style import finish, new_figure

    rows = [r for r in body["runs"] if "variant" in r]
    names = [r["variant"] for r in rows]
    colors = sns.color_palette("colorblind", len(rows))
    fig, axes = new_figure((10, 3.4), ncols=3)
    panels = [("held-out accuracy (clips)", [r["accuracy"] for r in rows]),
              ("training FLOPs / step vs full", [r["cost"].get("train_flops_ratio", np.nan) for r in rows]),
              ("median step time vs full", [r.get("step_time_ratio", np.nan) for r in rows])]
    for ax, (title, values) in zip(axes[0], panels):
        bars = ax.bar(np.arange(len(rows)), values, color=colors)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
        ax.set_xticks(np.arange(len(rows)), names)
        ax.set_title(title, fontsize=9)
    axes[0, 1].axhline(1.0, color="0.3", lw=0.8, ls="--")
    axes[0, 2].axhline(1.0, color="0.3", lw=0.8, ls="--")
    m = body["mod"]
    fig.suptitle(f"VideoLLM-MoD, r = {m['r']}, {m['layers']} layers, same steps and seed", fontsize=10)
    return finish(fig)


def write_mod_outputs(body: dict, out: Path) -> None:
    """results.json, table.md and mod.png, all from the results body."""
    write_report(out, body, mod_markdown(body), {"mod.png": lambda: plot_mod(body)})


__all__ = ["mod_markdown", "plot_mod", "write_mod_outputs"]
