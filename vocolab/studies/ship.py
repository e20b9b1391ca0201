"""`vocolab ship` (`make models`): copy the final recipe's trained models into the repository.

The models come from the runs that trained them, never from a separate training path:
the quickstart's upper and VoCo models, the temporal study's `temporal` model and the
MoD study's `learned` model, each found under the cache's runs folder for the preset
and seed (`make models` runs those three jobs first; a finished job is not trained
again). Each is written in float16 by `shipped.save_trained`, loaded back, and checked
on the first held-out items (`shipped.check_accuracy`); the check and the provenance of
the job that trained it (from its committed results file) go into its meta.json.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from vocolab.studies.common import job_runs

FIGURES = Path(__file__).resolve().parents[2] / "figures"


def sources(preset: str, seed: int) -> dict[str, tuple[Path, Path, str]]:
    """name -> (trained model folder, results file of the job that trained it, make target)."""
    quickstart, studies = job_runs("quickstart", preset, seed) / "checkpoints", job_runs("sweep", preset, seed)
    return {"upper": (quickstart / "upper", FIGURES / "quickstart" / "results.json", "quickstart"),
            "voco": (quickstart / "voco", FIGURES / "quickstart" / "results.json", "quickstart"),
            "video": (studies / "temporal" / "models" / "temporal", FIGURES / "temporal" / "results.json", "temporal"),
            "mod": (studies / "mod" / "models" / "learned", FIGURES / "mod" / "results.json", "mod")}


def run_ship(preset: str = "nano", seed: int = 0, out: str | Path | None = None, *, names=None,
             command: str = "vocolab ship", progress: bool = True) -> dict:
    """Write every shipped model (or `names`) to `out/<preset>/<name>/`; returns name -> check."""
    from vocolab.models.checkpoint import META
    from vocolab.reporting.provenance import provenance
    from vocolab.shipped import MODELS, SHIPPED_ROOT, check_accuracy, load_trained, save_trained, shipped_folder

    start = time.perf_counter()
    names = tuple(names or MODELS)
    where = sources(preset, seed)
    missing = [f"{n} ({where[n][0]}: run `make {where[n][2]}`)" for n in names if not (where[n][0] / META).is_file()]
    if missing:
        raise ValueError("ship: these trained models are missing: " + "; ".join(missing))
    root = Path(out) if out else SHIPPED_ROOT
    checks = {}
    for name in names:
        folder, results_file, _ = where[name]
        model, cfg, meta = load_trained(folder)
        trained_by = json.loads(results_file.read_text())["provenance"] if results_file.is_file() else None
        target = shipped_folder(name, preset, root)
        save_trained(model, cfg, target, {"stage": meta.get("stage", name), "trained_by": trained_by}, half=True)
        shipped, _, shipped_meta = load_trained(target)  # the check runs on the float16 weights
        check = check_accuracy(name, shipped, cfg, progress=progress)
        shipped_meta["check"] = check
        shipped_meta["shipped_by"] = provenance(command, preset, seed, time.perf_counter() - start, root)
        (target / META).write_text(json.dumps(shipped_meta, indent=2, sort_keys=True) + "\n")
        size = sum(f.stat().st_size for f in target.iterdir())
        checks[name] = check
        print(f"{name:6s} -> {target} | {size / 1e6:.2f} MB | check: {check['accuracy']:.3f} on "
              f"{check['questions']} held-out questions")
    return checks


__all__ = ["run_ship", "sources"]
