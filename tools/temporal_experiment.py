"""One temporal-tuning experiment, scored on the VALIDATION clips (never the held-out ones).

The temporal study's `temporal` cell (`vocolab temporal`: the image VoCo model continued on
clip QA under the `video` mask, K = 2 VoCo tokens per frame, distilled from the study's
`video-upper`) is what target 5 asks to keep >= 0.80 of the video upper bound. This trains that
one cell from the study's saved models (`RUNS/temporal/models/voco-image` as the start; with
`--teacher RUNS/temporal/models/video-upper`, distilled from it with the recipe's
`train.voco_objective` as the study does; without `--teacher`, the plain cell the study trained
before `vocolab/studies/temporal.py` distilled it) and writes the validation accuracy per
family, the video upper bound and lower bound of the saved `video-upper` (the study's `lower`:
that model under the `video` mask), the retention and the seconds per step to
`figures/temporal-experiments/<name>.json`:

    python tools/temporal_experiment.py T1600_saved --saved RUNS/sweep-nano-seed0/temporal/models/temporal
    python tools/temporal_experiment.py T1600_8k --steps 1600 --train-clips 8000
    python tools/temporal_experiment.py T1600_8k_distil --steps 1600 --train-clips 8000 \\
        --teacher RUNS/sweep-nano-seed0/temporal/models/video-upper

`--saved` scores a saved temporal model (the committed study's cell, on validation) instead of
training one; `--upper` another saved video upper bound for the retention; `--init` another
start than the study's voco-image model; `--merge S` starts from the study's video-upper plus S x
(voco-image - the scene model both started from, `RUNS/off-lattice-550`; `models.merging`); `--set`
overrides the cell's config (say, `train.voco_objective=logits`, or `voco.tokens=8`: another K per
frame, scored at that K with its own lower bound); `--train-seed S` trains the same cell on the same clips in
another order (how far two training runs of one recipe part). Runs go under `$VOCOLAB_CACHE/runs/experiments/<name>`,
the trained model in its `model` folder (a later run's `--init`: a curriculum over K is two runs). Run
one at a time: two training processes on two cores slow each other down.
"""

import argparse
import json
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "figures" / "temporal-experiments"


def main(argv=None) -> int:
    from recipe_experiment import _brief

    from vocolab.cli import _parse_overrides
    from vocolab.data.clips import TEMPORAL_FAMILIES
    from vocolab.data.module import VoCoDataModule
    from vocolab.data.storage import cache_root
    from vocolab.evaluation.clips import clip_run
    from vocolab.evaluation.heldout import Questions, add_retention
    from vocolab.models.checkpoint import load_checkpoint, save_checkpoint
    from vocolab.reporting.provenance import provenance
    from vocolab.studies.common import QUICK, runs_dir, study_config
    from vocolab.studies.temporal import K
    from vocolab.studies.temporal_settings import CellSettings

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-seed", type=int, default=None,
                    help="the cell's training order and random draws (default --seed); the clips, the saved models "
                         "and the validation questions stay --seed's: a second training run of the same cell")
    ap.add_argument("--steps", type=int, default=1600, help="clip-QA training steps (the study's: 1600)")
    ap.add_argument("--train-clips", type=int, default=None, help="training clips (default data.train_clips)")
    ap.add_argument("--saved", default=None, help="score this saved temporal model folder instead of training")
    ap.add_argument("--init", default=None, help="the start (default: the study's saved voco-image model)")
    ap.add_argument("--merge", type=float, default=None, metavar="SHARE",
                    help="start from video-upper + SHARE x (voco-image - the off-lattice scene model)")
    ap.add_argument("--teacher", default=None, help="distil from this saved clip model (default: no teacher)")
    ap.add_argument("--upper", default=None, help="the video upper bound (default: the study's saved video-upper)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides of the temporal cell")
    args = ap.parse_args(argv)
    if args.saved and (args.teacher or args.init or args.set or args.merge is not None):
        ap.error("--saved scores a trained model: not with --teacher, --init, --merge or --set")
    if args.init and args.merge is not None:
        ap.error("--init or --merge: one start")
    overrides = _parse_overrides(args.set)
    start = time.perf_counter()
    cfg = study_config("nano", args.seed, None, QUICK)  # the study's config
    models = runs_dir(cfg) / "temporal" / "models"
    cell = cfg.override(**{"voco.tokens": K, "voco.mask": "video", **overrides})  # TemporalStudy.cell_cfg
    scenes = VoCoDataModule(cfg, turns=cfg.train.turns, progress=False)
    scenes.setup()
    tok = scenes.tokenizer
    n_train = args.train_clips or cfg.data.train_clips
    train_seed = cfg.seed if args.train_seed is None else args.train_seed  # the order; the clips stay --seed's
    clips = VoCoDataModule(cell, kind="clips", turns=cell.train.turns, train_n=n_train, progress=False, tokenizer=tok,
                           seed=train_seed)
    clips.setup()
    upper = load_checkpoint(args.upper or models / "video-upper")[0].eval()
    t = time.perf_counter()
    if args.saved:
        model, _, meta = load_checkpoint(args.saved)
        args.steps, train_s = meta.get("steps", 0), meta.get("train_s", 0.0)
    else:
        if args.merge is None:
            init = load_checkpoint(args.init or models / "voco-image")[0]
        else:  # the study's merged start; its video-upper is already loaded unless --upper named another
            def saved(name):
                return upper if name == "video-upper" and args.upper is None else load_checkpoint(models / name)[0]

            merged = CellSettings(temporal_init="merged", temporal_merge=args.merge)
            init = merged.temporal_start(saved, load_checkpoint(runs_dir(cfg) / "off-lattice-550")[0])
        teacher = load_checkpoint(args.teacher)[0] if args.teacher else None
        folder = cache_root() / "runs" / "experiments" / args.name
        model = train_temporal(cell, clips, init, args.steps, folder, teacher=teacher)
        train_s = round(time.perf_counter() - t, 1)
        save_checkpoint(model, cell, folder / "model", {"steps": args.steps, "train_s": train_s})  # a later --init
    val = clips.split("val")
    qs = Questions.of(val)
    per_frame = cell.voco.tokens  # the study's K, unless `--set voco.tokens=...` asks another
    score = {"temporal": (model, "voco", "video", per_frame, per_frame),  # name: (model, method, mask, k, tokens)
             "video-upper": (upper, "full", "causal", cfg.voco.tokens, cfg.data.image_tokens),
             "lower": (upper, "voco", "video", per_frame, per_frame)}
    runs = [clip_run(m.eval(), tok, val.images, qs, TEMPORAL_FAMILIES, name=name, method=method, mask=mask, k=k,
                     tokens=tokens, progress=False) for name, (m, method, mask, k, tokens) in score.items()]
    runs = add_retention(runs, upper="video-upper", lower="lower")
    command = "python tools/temporal_experiment.py " + " ".join(sys.argv[1:] if argv is None else argv)
    body = {"name": args.name, "split": "val", "questions": len(qs), "k": per_frame, "steps": args.steps,
            "train_clips": n_train, **({"train_seed": train_seed} if train_seed != cfg.seed else {}),
            "objective": cell.train.voco_objective if args.teacher else "implicit",
            "init": args.init or (f"video-upper + {args.merge} x (voco-image - off-lattice-550)"
                                  if args.merge is not None else "voco-image"),
            "teacher": args.teacher, "upper": args.upper or "video-upper",
            **({"saved": args.saved} if args.saved else {}),
            "overrides": overrides, "train_s": train_s, "s_per_step": round(train_s / max(1, args.steps), 3),
            "runs": {r["name"]: _brief(r) | {"retention": r.get("retention"),
                                             "accuracy_vs_frames": r.get("accuracy_vs_frames")} for r in runs},
            "provenance": provenance(command, cfg.preset, cfg.seed, time.perf_counter() - start, OUT)}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{args.name}.json").write_text(json.dumps(body, indent=1) + "\n")
    print(json.dumps({k: body[k] for k in ("runs", "train_s")}, indent=1))
    return 0


def train_temporal(cell, clips, init, steps: int, out: Path, teacher=None, progress: bool = True):
    """The study's `temporal` cell (`TemporalStudy.model`): clip QA under the `video` mask from the
    image VoCo model `init`, seeded with the seed `clips` orders its batches by (the study's, unless
    the data module was given another); with a `teacher` (a clip model), a `DistillModule` trained
    with `cell.train.voco_objective` against it."""
    from lightning import seed_everything

    from vocolab.training.recipe import fine_tune, stage_module

    seed_everything(clips.seed, verbose=False)
    module = stage_module(cell, "temporal", "video", steps, teacher, tokenizer=clips.tokenizer)
    return fine_tune(module, clips, cell, out, "temporal", steps, init=init, progress=progress)


if __name__ == "__main__":
    sys.exit(main())
