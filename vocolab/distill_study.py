"""`vocolab distill`: the four VoCo training objectives compared, same steps and seed.

Every run starts from the same upper-bound model (the sweep's base model, trained
once per preset and seed), adds K VoCo tokens and trains under the `voco` mask for
the same number of steps with the same data order; only the objective differs
(`vocolab.distill.OBJECTIVES`: implicit = the paper's code, logits = + KL to the
teacher's answer distribution, attention = + text hidden-state alignment, and both).
The teacher is that upper-bound model itself, frozen. Results are reported as
held-out accuracy, retention and per-family accuracy; whichever objective wins.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .cells import key_of, log_invocation, model_id, run_cells
from .config import quick_mode
from .distill import OBJECTIVES
from .sweep import QUICK, SWEEP_STEPS, base_model, runs_dir, study_config

KS = (1, 4)


def run_distill_study(preset_name: str = "nano", out: str | Path = "figures/distill", *, seed: int = 0,
                      ks=KS, objectives=OBJECTIVES, steps: int | None = None, limit: int | None = None,
                      temperature: float = 2.0, kl_weight: float = 1.0, hidden_weight: float = 1.0,
                      overrides: dict | None = None, command: str = "vocolab distill",
                      progress: bool = True) -> dict:
    """Train and evaluate every (objective, K); write results.json, table.md and a figure."""
    from .data import FAMILIES
    from .data.module import VoCoDataModule
    from .evaluate import Questions, add_retention, bound_runs, model_run
    from .report import results
    from .runtime import provenance

    start = time.perf_counter()
    bad = [o for o in objectives if o not in OBJECTIVES]
    if bad:
        raise ValueError(f"distill: unknown objective(s) {bad}; choose from {OBJECTIVES}")
    cfg = study_config(preset_name, seed, overrides, QUICK)
    steps = steps if steps is not None else (5 if quick_mode() else SWEEP_STEPS)
    out, runs = Path(out), runs_dir(cfg)
    data = VoCoDataModule(cfg, turns=cfg.train.turns, progress=progress)
    data.setup()
    qs = Questions.of(data.splits["heldout"], limit)
    upper = base_model(cfg, runs, data, progress)
    heldout, tok = data.splits["heldout"], data.tokenizer
    bounds = bound_runs(upper, tok, data.splits["train"], heldout, qs, FAMILIES, k_lower=1, progress=progress)
    base_id = model_id(upper)

    weights = {"temperature": temperature, "kl_weight": kl_weight, "hidden_weight": hidden_weight}

    def train(objective: str, k: int) -> dict:
        from .distill import DistillModule
        from .train import make_trainer

        t0 = time.perf_counter()
        cell_cfg = cfg.override(**{"voco.tokens": k})
        torch.manual_seed(cfg.seed)
        module = DistillModule(cell_cfg, objective=objective, mask="voco", stage=f"distill-{objective}-k{k}",
                               steps=steps, **weights)
        module.model.load_backbone(upper.state_dict())
        if objective != "implicit":
            module.set_teacher(upper)
        data.set_task("qa", voco_tokens=k, image_slots=cell_cfg.image_slots)
        data.batch_size = cell_cfg.train.batch_size
        trainer = make_trainer(cell_cfg, runs / "distill", module.stage, steps, progress=progress,
                               checkpoint=False, limit_val_batches=0)
        trainer.fit(module, datamodule=data)
        upper.cpu()  # the teacher may have followed the student to an accelerator
        model = module.model.cpu().eval()
        run = model_run(model, tok, heldout, qs, FAMILIES, name=f"{objective}-k{k}", method="voco", mask="voco",
                        k=k, progress=progress)
        return run | {"objective": objective, "train_steps": steps, "wall_s": round(time.perf_counter() - t0, 1)}

    cells = [(f"{o}-k{k}", key_of({"o": o, "k": k, "cfg": cfg.to_dict(), "steps": steps, "base": base_id,
                                   "questions": len(qs), **weights}),
              lambda o=o, k=k: train(o, k)) for k in ks for o in objectives]
    ran: list[str] = []
    done, failed = run_cells(cells, out / "cells", desc="distill", progress=progress, ran=ran)
    all_runs = add_retention(bounds + done)
    wall = time.perf_counter() - start
    history = log_invocation(out, command, wall, ran, failed)
    body = results(provenance(command, cfg.preset, seed, wall, out),
                   {"split": "heldout", "examples": len(qs), "families": list(FAMILIES)}, all_runs,
                   config=cfg.to_dict(), invocations=history,
                   distill={"objectives": list(objectives), "ks": list(ks), "steps": steps, "failed": failed,
                            **weights,
                            "cells_wall_s": round(sum(r.get("wall_s", 0) for r in done), 1)})
    write_distill_outputs(body, out, echo=progress)
    return body


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

    from .plotting import _finish, _new_figure

    rows = [r for r in body["runs"] if "objective" in r]
    objectives = list(dict.fromkeys(r["objective"] for r in rows))
    ks = sorted({r["tokens"] for r in rows})
    fig, axes = _new_figure((1.6 * len(objectives) * len(ks) / 2 + 3, 3.6))
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
    return _finish(fig)


def write_distill_outputs(body: dict, out: Path, echo: bool = True) -> None:
    from .outputs import write_json
    from .plotting import save_figure

    write_json(out / "results.json", body)
    (out / "table.md").write_text(distill_markdown(body) + "\n")
    save_figure(plot_distill(body), out / "objectives.png")
    if echo:
        print(distill_markdown(body))


__all__ = ["KS", "distill_markdown", "plot_distill", "run_distill_study", "write_distill_outputs"]
