"""Results files, written all-or-nothing.

Every job that evaluates writes a `results.json` whose keys tools and tests rely on
(`provenance`, `eval`, `runs`, optional `cost`, then the job's own sections; the format
is in docs/architecture.md), and every table and figure is drawn from that body, never
typed by hand, so a number in the README traces to the run that made it.

Folders are written all-or-nothing (`core.outputs.staged_output`): a run that fails
half-way never leaves a results file without its figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from vocolab.core.outputs import write_json


def results(provenance: dict, eval_info: dict, runs: list[dict], cost: dict | None = None, **extra) -> dict:
    """A results file body with the keys tools and tests rely on."""
    body = {"provenance": provenance, "eval": eval_info, "runs": runs}
    if cost is not None:
        body["cost"] = cost
    return body | extra


def write_report(out: str | Path, body: dict, table: str, figures: dict[str, Callable[[], object]],
                 echo: bool = True) -> None:
    """A study's folder: `results.json`, `table.md` and each figure `name -> draw()` (a PNG),
    all from the results body; the table is printed too when `echo`."""
    from vocolab.core.runtime import is_main_process
    from vocolab.reporting.style import save_figure

    out = Path(out)
    if not is_main_process():
        return
    write_json(out / "results.json", body)
    (out / "table.md").write_text(table + "\n")
    for name, draw in figures.items():
        save_figure(draw(), out / name)
    if echo:
        print(table)


