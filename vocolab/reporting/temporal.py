"""The temporal study's report, drawn from its results file: the table per model and
family with cache bytes per frame, accuracy against the number of frames given,
per-family bars with blind as the chance line, and one clip streamed frame by frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vocolab.reporting.results import write_report
from vocolab.reporting.tables import pct


def temporal_markdown(body: dict) -> str:
    families = body["eval"]["families"]
    total = body["eval"]["frames"]
    head = ["run", "method", "tokens/frame", "mask", "accuracy", *families, "retention", "cache bytes/frame"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in body["runs"]:
        cost = r.get("cost", {}).get("cache_bytes_per_frame")
        lines.append("| " + " | ".join([
            r["name"], r["method"], str(r["tokens"]), r.get("mask", "-"), pct(r["accuracy"], ""),
            *(pct(r.get("per_family", {}).get(f), "") for f in families),
            "-" if r.get("retention") is None else f"{r['retention']:.2f}",
            "-" if cost is None else f"{cost:,}"]) + " |")
    curves = [r for r in body["runs"] if "accuracy_vs_frames" in r]
    if curves:
        head = ["run", *(f"t={t}" for t in range(1, total + 1))]
        lines += ["", "Accuracy (%) when only the first t frames are given:", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in curves:
            lines.append("| " + " | ".join([r["name"], *(pct(r["accuracy_vs_frames"].get(str(t)), "")
                                                         for t in range(1, total + 1))]) + " |")
    t = body["temporal"]
    own = t.get("temporal_steps") or t["steps"]  # files before --temporal-steps have none
    upper, upper_clips = t.get("upper_steps") or t["steps"], t.get("upper_clips") or t["clips"]["train"]
    objective = f" with the {t['temporal_objective']} objective" if t.get("temporal_objective") else ""
    if t.get("temporal_init", "voco-image") != "voco-image":  # files before --temporal-init have none
        objective += f" from {t['temporal_init']}"
    if t.get("temporal_init") == "merged":
        objective += f" (video-upper + {t['temporal_merge']} x the image VoCo model's change)"
    if t.get("temporal_questions"):
        objective += f", {t['temporal_questions']} questions per training clip"
    if t.get("temporal_teacher_cache"):
        objective += ", the teacher's answers kept per clip"
    if t.get("temporal_batch"):
        objective += f", batches of {t['temporal_batch']} clips"
    if t.get("temporal_attention"):
        objective += f", attention {t['temporal_attention']}"
    if t.get("temporal_temperature"):
        objective += f", KL temperature {t['temporal_temperature']:g}"
    apart = ([f"{own} for temporal{objective}"] if own != t["steps"] or objective else []) + (
        [f"{upper} on {upper_clips:,} training clips for video-upper"]
        if (upper, upper_clips) != (t["steps"], t["clips"]["train"]) else [])
    steps = f"{t['steps']} training steps per model" + (f" ({'; '.join(apart)})" if apart else "")
    lines += ["", f"Accuracy in %, {body['eval']['examples']} held-out questions on clips of {total} frames; "
                  f"K = {t['k']} tokens per frame, {steps}. Retention against "
                  f"video-upper, lower bound = video-upper under the video mask with K VoCo tokens per frame."]
    seen = t.get("frame_perception")
    if seen:
        tuned = t.get("off_lattice_steps")
        model = f"shared scene model (tuned {tuned} steps on off-lattice scenes)" if tuned else "shared scene model"
        lines.append(f"The {model} asked the scene families: {pct(seen['scenes']['accuracy'], '')}% on "
                     f"held-out scenes, {pct(seen['clip_frames']['accuracy'], '')}% on the clips' middle frames "
                     f"(objects between lattice cells; {seen['clip_frames']['questions']} questions each).")
    if t.get("failed"):
        lines.append(f"Failed cells: {', '.join(t['failed'])}.")
    return "\n".join(lines)


def plot_accuracy_vs_frames(body: dict):
    """Accuracy when only the first t frames are given, one line per model; single-frame
    references and blind as horizontal lines."""
    import seaborn as sns

    from vocolab.reporting.style import finish, new_figure

    total = body["eval"]["frames"]
    curves = [r for r in body["runs"] if "accuracy_vs_frames" in r]
    fig, axes = new_figure((5.6, 3.8))
    ax = axes[0, 0]
    colors = sns.color_palette("colorblind", max(1, len(curves)))
    ts = list(range(1, total + 1))
    for color, r in zip(colors, curves):
        ax.plot(ts, [r["accuracy_vs_frames"][str(t)] for t in ts], marker="o", color=color, label=r["name"],
                ls="--" if r["name"] == "lower" else "-")
    by = {r["name"]: r for r in body["runs"]}
    for name, color, style in (("middle-frame", "0.3", "-."), ("best-single-frame", "black", ":"),
                               ("blind", "0.6", (0, (1, 3)))):
        if name in by:
            ax.axhline(by[name]["accuracy"], color=color, ls=style, lw=1.2, label=name)
    ax.set_xticks(ts)
    ax.set_xlabel("frames given (t)")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(f"Accuracy against frames (K = {body['temporal']['k']} per frame)")
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return finish(fig)


def plot_temporal_families(body: dict):
    """Per-family accuracy of every model run, blind as each family's chance line."""
    from vocolab.reporting.accuracy import plot_family_accuracy

    by = {r["name"]: r for r in body["runs"]}
    runs = {r["name"]: r["per_family"] for r in body["runs"] if r["name"] != "blind" and "per_family" in r}
    chance = by["blind"]["per_family"] if "blind" in by else None
    return plot_family_accuracy(runs, chance=chance, families=body["eval"]["families"],
                                title=f"Temporal families, {body['eval']['frames']} frames "
                                      f"(black lines: blind)")


def plot_streaming(frames: np.ndarray, example: dict):
    """One clip streamed frame by frame: each frame with the cache size and the answer so far."""
    from vocolab.reporting.style import finish, new_figure

    total = len(example["steps"])
    fig, axes = new_figure((2.2 * total, 3.0), 1, total)
    for ax, frame, step in zip(axes[0], frames, example["steps"]):
        ax.imshow(frame, interpolation="nearest")
        ax.set_axis_off()
        ok = "ok" if step["answer"] == example["gold"] else "x"
        ax.set_title(f"t={step['frames'] - 1}: cache {step['cache_tokens']} tok\n{step['cache_bytes']:,} B\n"
                     f"answer: {step['answer'] or '-'} ({ok})", fontsize=8)
    fig.suptitle(f"{example['question']}  (gold: {example['gold']})", fontsize=10)
    return finish(fig)


def write_temporal_outputs(body: dict, out: str | Path, example_frames: np.ndarray | None = None) -> None:
    """results.json, table.md and the figures (the streamed example's when its frames are
    given), all from the results body."""
    figures = {"accuracy_per_family.png": lambda: plot_temporal_families(body),
               "accuracy_vs_frames.png": lambda: plot_accuracy_vs_frames(body)}
    example = body.get("temporal", {}).get("example")
    if example is not None and example_frames is not None:
        figures["streaming.png"] = lambda: plot_streaming(example_frames, example)
    write_report(out, body, temporal_markdown(body), figures)


__all__ = [
    "plot_accuracy_vs_frames", "plot_streaming", "plot_temporal_families", "temporal_markdown",
    "write_temporal_outputs",
]
