"""`vocolab distill`: the four VoCo training objectives compared, same steps and seed.

Every run starts from the same upper-bound model (the sweep's base model, trained
once per preset and seed), adds K VoCo tokens and trains under the `voco` mask for
the same number of steps with the same data order; only the objective differs
(`training.distill.OBJECTIVES`: implicit = the paper's code, logits = + KL to the
teacher's answer distribution, attention = + text hidden-state alignment, and both).
The teacher is that upper-bound model itself, frozen. Results are reported as
held-out accuracy, retention and per-family accuracy; whichever objective wins.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

from lightning import seed_everything

from vocolab.reporting.distill import write_distill_outputs
from vocolab.studies.cells import key_of, run_cells
from vocolab.studies.common import QUICK, Study, cell_steps, finish, study_config
from vocolab.training.distill import OBJECTIVES

KS = (1, 4)


def run_distill_study(preset_name: str = "nano", out: str | Path = "figures/distill", *, seed: int = 0,
                      ks=KS, objectives=OBJECTIVES, steps: int | None = None, limit: int | None = None,
                      temperature: float = 2.0, kl_weight: float = 1.0, hidden_weight: float = 1.0,
                      overrides: dict | None = None, command: str = "vocolab distill",
                      progress: bool = True) -> dict:
    """Train and evaluate every (objective, K); write results.json, table.md and a figure."""
    from vocolab.evaluation.heldout import add_retention, model_run

    start = time.perf_counter()
    bad = [o for o in objectives if o not in OBJECTIVES]
    if bad:
        raise ValueError(f"distill: unknown objective(s) {bad}; choose from {OBJECTIVES}")
    cfg = study_config(preset_name, seed, overrides, QUICK)
    steps = cell_steps(steps)
    out = Path(out)
    study = Study.on_scenes(cfg, steps, limit, progress)
    bounds = study.bounds()
    weights = {"temperature": temperature, "kl_weight": kl_weight, "hidden_weight": hidden_weight}

    def train(objective: str, k: int) -> dict:
        from vocolab.training.distill import DistillModule
        from vocolab.training.recipe import fine_tune

        t0 = time.perf_counter()
        cell_cfg = cfg.override(**{"voco.tokens": k})
        seed_everything(cfg.seed, verbose=False)
        module = DistillModule(cell_cfg, objective=objective, mask="voco", stage=f"distill-{objective}-k{k}",
                               steps=steps, tokenizer=study.data.tokenizer, **weights)
        if objective != "implicit":
            module.set_teacher(study.upper)
        model = fine_tune(module, study.data, cell_cfg, study.runs / "distill", module.stage, steps,
                          init=study.upper, progress=progress)
        study.upper.cpu()  # the teacher may have followed the student to an accelerator
        run = model_run(model, study.data.tokenizer, study.data.splits["heldout"], study.qs, study.families,
                        name=f"{objective}-k{k}", method="voco", mask="voco", k=k, progress=progress)
        return run | {"objective": objective, "train_steps": steps, "wall_s": round(time.perf_counter() - t0, 1)}

    base_id = study.base_id
    cells = [(f"{o}-k{k}", key_of({"o": o, "k": k, "cfg": cfg.to_dict(), "steps": steps, "base": base_id,
                                   "questions": len(study.qs), **weights}),
              lambda o=o, k=k: train(o, k)) for k in ks for o in objectives]
    ran: list[str] = []
    done, failed = run_cells(cells, out / "cells", desc="distill", progress=progress, ran=ran)
    details = {"objectives": list(objectives), "ks": list(ks), "steps": steps, "failed": failed, **weights,
               "cells_wall_s": round(sum(r.get("wall_s", 0) for r in done), 1)}
    eval_info = {"split": "heldout", "examples": len(study.qs), "families": list(study.families)}
    return finish("distill", out, command, start, cfg, eval_info, add_retention(bounds + done), details,
                  partial(write_distill_outputs, echo=progress), ran=ran, failed=failed, base=study.runs)


__all__ = ["KS", "run_distill_study"]
