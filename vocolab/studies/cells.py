"""Resumable grids of runs ("cells"): the sweep, the distillation study, the scaling grid.

Each finished cell is one JSON file `folder/<name>.json` holding its `cell_key` (a hash
of everything that determines it: settings, base model, questions). A rerun skips
cells whose key still matches, retries cells that failed (`<name>.failed.json`, with
the traceback) and goes on past a cell that fails again, so one broken method never
costs the rest of a long grid.
"""

from __future__ import annotations

import hashlib
import json
import time
import traceback
from pathlib import Path
from typing import Callable, Iterable

from vocolab.core.outputs import write_json


def key_of(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def model_id(model) -> str:
    """A cheap identity of a model's weights: cells made from another base model are stale."""
    import torch

    with torch.no_grad():
        return key_of({"weights": f"{sum(p.double().sum().item() for p in model.parameters()):.12e}"})


def architecture(model) -> str:
    """The names and shapes of a model's weights. A clip-trained cell also depends on them: the
    frame embeddings (`VoCoVLM.frame_positions`) are unused in a scene model, which may have been
    saved without them (or with a zero start), but clip training makes them count."""
    return key_of({name: list(p.shape) for name, p in model.named_parameters()})


def made_at(out: str | Path | None = None) -> dict:
    """Which code made a cell (a resumed grid mixes cells from several invocations);
    `out`: the study's folder, whose own files do not count as a dirty checkout."""
    from vocolab.reporting.provenance import git_state

    commit, dirty = git_state(out)
    return {"commit": commit, "dirty": dirty, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}


def log_invocation(out: str | Path, command: str, wall_s: float, ran: list, failed: list) -> list[dict]:
    """Append this invocation (commit, command, wall time, cells it ran and that failed) to
    `out/invocations.json` and return the whole history: a resumed grid's results file keeps
    the cost of every run that made its cells, not only of the last (possibly seconds-long)
    invocation."""
    path = Path(out) / "invocations.json"
    history = json.loads(path.read_text()) if path.exists() else []
    history.append(made_at(out) | {"command": command, "wall_s": round(wall_s, 1), "cells_run": len(ran),
                                   "cells_failed": len(failed)})
    write_json(path, history)
    return history


def run_cells(cells: Iterable[tuple[str, str, Callable[[], dict]]], folder: str | Path, *, desc: str = "cells",
              progress: bool = True, ran: list | None = None) -> tuple[list[dict], list[str]]:
    """Run `(name, key, fn)` cells in order, skipping finished ones; returns (runs, failed names).
    The names of the cells this call actually ran are appended to `ran` when given."""
    from tqdm.auto import tqdm

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cells = list(cells)
    done, failed = [], []
    bar = tqdm(cells, desc=desc, disable=not progress)
    for name, key, fn in bar:
        bar.set_postfix_str(name)
        path, bad = folder / f"{name}.json", folder / f"{name}.failed.json"
        if path.exists():
            old = json.loads(path.read_text())
            if old.get("cell_key") == key:
                done.append(old)
                continue
        try:
            run = fn() | {"cell_key": key, "made_at": made_at(folder)}
        except Exception as err:  # noqa: BLE001 - one broken cell must not stop the grid
            write_json(bad, {"cell": name, "error": f"{type(err).__name__}: {err}",
                             "traceback": traceback.format_exc()})
            failed.append(name)
            print(f"{desc}: cell {name} failed: {type(err).__name__}: {err}")
            continue
        bad.unlink(missing_ok=True)
        write_json(path, run)
        if ran is not None:
            ran.append(name)
        done.append(run)
        print(f"{desc}: {name}: accuracy {run['accuracy']:.3f} ({run.get('wall_s', 0):.0f} s)")
    return done, failed


__all__ = ["architecture", "key_of", "log_invocation", "made_at", "model_id", "run_cells"]
