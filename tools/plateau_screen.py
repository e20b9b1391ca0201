"""Screen a lever on the upper stage's plateau, on the VALIDATION split (never the held-out one).

Why: at nano the upper bound's seeds differ mainly in *when* the question-answering loss
leaves its plateau (seed 2 near step 400, seed 0 near 600, seed 1 near 1,400; RESULTS.md,
"Why the seeds differ"). A lever that shortens the plateau shows in the first ~1,000 steps,
so a screen trains the upper stage from a saved pretrain checkpoint (the same one for every
lever), stops it after `--stop` steps (the schedule stays the full stage's), prints the
training loss every 100 steps and scores the stage's saved checkpoints on the validation split:

    python tools/plateau_screen.py S1_lr2 --seed 1 --pretrain RUNS/pretrain/checkpoints/last.ckpt \\
        --stop 800 --set train.lr=0.002

A lever that changes the caption pretraining too (the projector's start, say) leaves out
`--pretrain`: the screen then trains the seed's clip and pretrain stages first (about 3 min at nano).

Runs go under `$VOCOLAB_CACHE/runs/experiments/<name>`; one at a time (two training processes
on two cores slow each other down). The losses of levers that change the training scenes are
not comparable with each other: compare the validation accuracies.
"""

import argparse
import csv
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    from vocolab.data.storage import cache_root

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pretrain", default=None, help="a pretrain stage's last.ckpt (default: train clip and pretrain)")
    ap.add_argument("--stop", type=int, default=800, help="stop the upper stage after this many steps")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    start_from = ["--pretrain", args.pretrain] if args.pretrain else ["--stages", "clip,pretrain,upper"]
    cmd = [sys.executable, str(ROOT / "tools" / "recipe_experiment.py"), args.name, "--seed", str(args.seed),
           *start_from] + (["--set", *args.set] if args.set else [])
    folder = cache_root() / "runs" / "experiments" / args.name / "upper"
    start = time.perf_counter()
    with subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL) as run:
        while run.poll() is None and _steps(folder) < args.stop:
            time.sleep(5)
        if run.poll() not in (None, 0):
            raise SystemExit(f"{args.name}: the experiment failed (exit {run.returncode}); rerun "
                             f"tools/recipe_experiment.py with the same arguments to see why")
        run.kill()
    rows = _rows(folder)
    curve = [(int(r["step"]) + 1, round(float(r["train/loss"]), 3)) for r in rows if (int(r["step"]) + 1) % 100 == 0]
    print(f"{args.name}: {_steps(folder)} steps in {time.perf_counter() - start:.0f} s; training loss {curve}")
    ckpts = sorted((folder / "checkpoints").glob("step*.ckpt"), key=step_order)
    for ckpt, scores in validation(ckpts):
        print(f"{args.name} {ckpt.stem}: validation {scores}", flush=True)
    return 0


def _rows(folder: Path) -> list[dict]:
    try:
        with open(folder / "metrics.csv") as f:
            return list(csv.DictReader(f))
    except OSError:
        return []


def _steps(folder: Path) -> int:
    rows = _rows(folder)
    return int(rows[-1]["step"]) + 1 if rows else 0


def step_order(path: Path) -> tuple[int, str]:
    """Sort key of a stage's checkpoints: `step<N>.ckpt` by N, anything else (`last.ckpt`) after."""
    stem = path.stem
    return (int(stem[4:]), stem) if stem.startswith("step") and stem[4:].isdigit() else (1 << 62, stem)


def validation(ckpts: list[Path], mask: str = "causal"):
    """(checkpoint, accuracy and per-family accuracy on the validation split) for each
    checkpoint of an upper stage (`mask` causal) or a voco stage (`mask` voco, K from each
    checkpoint's config); the split is read once, from the first checkpoint's config."""
    from vocolab.data.module import VoCoDataModule
    from vocolab.data.scenes import FAMILIES
    from vocolab.evaluation.heldout import Questions, model_run
    from vocolab.training.loading import load_model

    data = val = qs = None
    for ckpt in ckpts:
        model = load_model(str(ckpt))
        if data is None:
            data = VoCoDataModule(model.cfg, turns=model.cfg.train.turns, progress=False)
            data.setup()
            val = data.split("val")
            qs = Questions.of(val)
        method = "full" if mask == "causal" else "voco"
        run = model_run(model, data.tokenizer, val, qs, FAMILIES, name=mask, method=method, mask=mask,
                        k=model.cfg.voco.tokens, progress=False)
        yield ckpt, {"accuracy": round(run["accuracy"], 3)} | {f: round(v, 2) for f, v in run["per_family"].items()}


if __name__ == "__main__":
    sys.exit(main())
