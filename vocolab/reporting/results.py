"""Results files, written all-or-nothing.

Every job that evaluates writes a `results.json` whose keys tools and tests rely on
(`provenance`, `eval`, `runs`, optional `cost`, then the job's own sections; the format
is in docs/architecture.md), and every table and figure is drawn from that body, never
typed by hand, so a number in the README traces to the run that made it.

A run that fails half-way must not leave a folder that looks finished (a results file
without its figures, a checkpoint without its weights): `staged_output` writes into a
hidden sibling folder that replaces the target only on success.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator


def results(provenance: dict, eval_info: dict, runs: list[dict], cost: dict | None = None, **extra) -> dict:
    """A results file body with the keys tools and tests rely on."""
    body = {"provenance": provenance, "eval": eval_info, "runs": runs}
    if cost is not None:
        body["cost"] = cost
    return body | extra


@contextlib.contextmanager
def staged_output(target: str | Path) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces `target`, on error it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"output path {target} exists and is not a folder")
    stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    stage.chmod(0o755)  # mkdtemp makes it private; the finished folder is meant to be shared
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    old = None
    try:
        if target.exists():
            old = target.with_name(f"{stage.name}.old")
            target.rename(old)
        stage.rename(target)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        if old is not None and old.exists() and not target.exists():
            old.rename(target)  # put the previous folder back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_report(out: str | Path, body: dict, table: str, figures: dict[str, Callable[[], object]],
                 echo: bool = True) -> None:
    """A study's folder: `results.json`, `table.md` and each figure `name -> draw()` (a PNG),
    all from the results body; the table is printed too when `echo`."""
    from vocolab.reporting.style import save_figure

    out = Path(out)
    write_json(out / "results.json", body)
    (out / "table.md").write_text(table + "\n")
    for name, draw in figures.items():
        save_figure(draw(), out / name)
    if echo:
        print(table)


def write_json(path: str | Path, payload: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")
    return path
