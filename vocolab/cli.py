"""The `vocolab` command.

Every subcommand turns bad input (unknown preset, bad override, unreadable file)
into one line on stderr and exit code 2, never a traceback, and writes its
output folder only when it has finished (see `staged_output`).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError)


def _parse_overrides(pairs: Sequence[str]) -> dict:
    """`key=value` pairs; values are read as JSON when they parse (numbers, lists), else strings."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"override {pair!r} is not of the form key=value (e.g. voco.tokens=4)")
        key, raw = pair.split("=", 1)
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def _devices(parser: argparse.ArgumentParser) -> None:
    """`--devices N` and `--strategy S`: data parallelism through Lightning (train.devices, train.strategy)."""
    parser.add_argument("--devices", type=int, default=None, help="processes / GPUs to train on (default 1)")
    parser.add_argument("--strategy", default=None, help="Lightning strategy (default: ddp when --devices > 1)")


def _overrides(args) -> dict:
    """`--set` pairs plus `--devices` / `--strategy`."""
    out = _parse_overrides(args.set)
    if getattr(args, "devices", None) is not None:
        out["train.devices"] = args.devices
    if getattr(args, "strategy", None) is not None:
        out["train.strategy"] = args.strategy
    return out


def _train_clips(study: argparse.ArgumentParser) -> None:
    """The options of the video studies."""
    study.add_argument("--train-clips", type=int, default=None,
                       help="training clips (default data.train_clips; the scene model stays the same)")
    study.add_argument("--off-lattice-steps", type=int, default=0, metavar="N",
                       help="start the clip models from the scene model tuned N steps on off-lattice scenes")


def _study(sub, name: str, help_text: str, out: str) -> argparse.ArgumentParser:
    """A resumable study's subcommand with the options every study shares."""
    study = sub.add_parser(name, help=help_text)
    _devices(study)
    study.add_argument("--preset", default="nano", help="nano | small | base")
    study.add_argument("--seed", type=int, default=0)
    study.add_argument("--out", default=out, help="output folder (finished runs are kept there)")
    study.add_argument("--steps", type=int, default=None, help="training steps per trained run")
    study.add_argument("--limit", type=int, default=None, help="evaluate only the first N held-out questions")
    study.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    return study


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vocolab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    quick = sub.add_parser("quickstart", help="the main job: data, model, masks, figures")
    quick.add_argument("--preset", default="nano", help="nano | small | base")
    quick.add_argument("--seed", type=int, default=0)
    quick.add_argument("--out", default="figures/quickstart", help="output folder")
    quick.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                       help="config overrides, e.g. voco.tokens=2 data.max_objects=5")
    _devices(quick)

    fit = sub.add_parser("fit", help="train one stage from a LightningCLI YAML file (configs/<preset>/)",
                         description="Any further --section.key value arguments go to LightningCLI.")
    fit.add_argument("--config", required=True, help="stage YAML, e.g. configs/nano/voco.yaml")

    ev = sub.add_parser("eval", help="evaluate checkpoints on held-out scenes and write a results file")
    ev.add_argument("--upper", required=True, help="checkpoint (.ckpt or vocolab folder) of the causal model")
    ev.add_argument("--voco", nargs="*", default=[], help="checkpoints of VoCo models to evaluate")
    ev.add_argument("--out", required=True, help="results folder (results.json is written there)")
    ev.add_argument("--limit", type=int, default=None, help="evaluate only the first N held-out questions")
    ev.add_argument("--confusion", nargs="*", default=[], metavar="FAMILY",
                    help="also count which answer each model gave per gold answer in these families (e.g. spatial)")

    sweep = _study(sub, "sweep", "every compression method at every token count (resumable)", "figures/sweep")
    sweep.add_argument("--methods", nargs="*", default=None, help="subset of methods (default: all)")
    sweep.add_argument("--ks", nargs="*", type=int, default=None, help="token counts K (default: 1 2 4 8 16 32)")

    distill = _study(sub, "distill", "the VoCo training objectives compared (implicit / logits / attention "
                                     "distillation), resumable", "figures/distill")
    distill.add_argument("--ks", nargs="*", type=int, default=None, help="VoCo token counts (default: 1 4)")
    distill.add_argument("--objectives", nargs="*", default=None, help="subset of objectives (default: all)")

    temporal = _study(sub, "temporal", "temporal tuning: VoCo on video clips (video mask) against pooling, "
                                       "full tokens and one frame, resumable", "figures/temporal")
    temporal.add_argument("--k", type=int, default=2, help="VoCo (and pooled) tokens per frame")
    temporal.add_argument("--temporal-steps", type=int, default=None,
                          help="training steps of the temporal cell (default --steps; distilled, it needs fewer)")
    temporal.add_argument("--temporal-objective", default=None, metavar="OBJECTIVE",
                          help="the temporal cell's distillation objective (a train.voco_objective; default the "
                               "recipe's)")
    from vocolab.studies.temporal_settings import TEMPORAL_STARTS  # light: the core config only

    temporal.add_argument("--temporal-init", default="voco-image", choices=TEMPORAL_STARTS,
                          help="the temporal cell's start: the image VoCo model (default), the video upper bound, "
                               "or that plus --temporal-merge x the image VoCo model's change (merged)")
    temporal.add_argument("--temporal-merge", type=float, default=1.0, metavar="SHARE",
                          help="with --temporal-init merged: the share of the image VoCo model's change from the "
                               "scene model added to the video upper bound (default 1)")
    temporal.add_argument("--temporal-questions", type=int, default=0, metavar="N",
                          help="questions per training clip for the temporal cell (default 0: the data's; the "
                               "held-out clips keep theirs)")
    temporal.add_argument("--temporal-teacher-cache", action="store_true",
                          help="keep the teacher's answer logits per training clip (train.teacher_cache; needs "
                               "--temporal-objective logits): the same losses, cheaper steps after the first epoch")
    temporal.add_argument("--temporal-batch", type=int, default=0, metavar="N",
                          help="the temporal cell's training batch in clips (default 0: train.batch_size)")
    temporal.add_argument("--temporal-attention", default=None, metavar="BACKEND",
                          help="the temporal cell's attention backend (default: llm.attn_implementation); "
                               "sdpa_frames computes only the video mask's blocks: the same numbers, cheaper")
    temporal.add_argument("--temporal-temperature", type=float, default=None, metavar="T",
                          help="the temporal cell's KL temperature (default: train.distill_temperature)")
    temporal.add_argument("--upper-steps", type=int, default=None,
                          help="training steps of the video upper bound (default --steps)")
    temporal.add_argument("--upper-clips", type=int, default=None,
                          help="training clips of the video upper bound (default --train-clips)")
    _train_clips(temporal)

    mod = _study(sub, "mod", "VideoLLM-MoD mixture-of-depths on clip QA against full computation, resumable",
                 "figures/mod")
    mod.add_argument("--r", type=float, default=0.2, help="share of each frame's vision tokens a MoD layer computes")
    mod.add_argument("--layers", default="interleaved", help="all | interleaved | deep")
    _train_clips(mod)

    bench = sub.add_parser("bench", help="step time, tokens/s, MFU and memory of every training stage and "
                                          "the evaluation on this machine")
    bench.add_argument("--preset", default="nano", help="nano | small | base")
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--out", default=None, help="output folder (default figures/bench-<preset>)")
    bench.add_argument("--steps", type=int, default=None, help="timed steps per stage (default 20)")
    bench.add_argument("--stages", nargs="*", default=None, help="subset of clip pretrain upper voco")
    bench.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    _devices(bench)

    ship = sub.add_parser("ship", help="write the trained quickstart, temporal and MoD models to trained/<preset>/ "
                                        "in float16, each checked on held-out items (make models)")
    ship.add_argument("--preset", default="nano", help="nano | small | base")
    ship.add_argument("--seed", type=int, default=0)
    ship.add_argument("--out", default=None, help="root folder (default trained/ in the repository)")
    ship.add_argument("--models", nargs="*", default=None, help="subset of upper voco video mod")

    scaling = _study(sub, "scaling", "LLM size x visual tokens grid and the inference-optimal scaling law "
                                     "Y(N, V), resumable", "figures/scaling")
    scaling.add_argument("--ks", nargs="*", type=int, default=None,
                         help="visual token counts K < V (default: 1 2 4 16; K = V is each size's upper bound)")
    scaling.add_argument("--methods", nargs="*", default=None, help="trained methods (default: voco quecc)")
    scaling.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples of the fit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, rest = build_parser().parse_known_args(argv)
    command = "vocolab " + " ".join(argv)
    try:
        if rest and args.command != "fit":
            raise ValueError(f"unrecognised arguments: {' '.join(rest)}")
        if getattr(args, "out", None):
            from vocolab.core.outputs import check_writable

            check_writable(args.out)  # an unwritable --out fails now, not after the training
        if args.command == "quickstart":
            from vocolab.studies.quickstart import run_quickstart

            run_quickstart(args.preset, args.seed, args.out, overrides=_overrides(args),
                           command=command)
        elif args.command == "fit":
            from vocolab.training.lightning_cli import run_fit

            run_fit(args.config, rest)
        elif args.command == "eval":
            from vocolab.studies.evaluate import run_eval

            run_eval(args.upper, args.voco, args.out, limit=args.limit, command=command,
                     confusion=tuple(args.confusion))
        elif args.command == "sweep":
            from vocolab.studies.sweep import KS, METHODS, run_sweep

            run_sweep(args.preset, args.out, seed=args.seed, methods=tuple(args.methods or METHODS),
                      ks=tuple(args.ks or KS), steps=args.steps, limit=args.limit,
                      overrides=_overrides(args), command=command)
        elif args.command == "distill":
            from vocolab.studies.distill import KS as DISTILL_KS
            from vocolab.studies.distill import run_distill_study
            from vocolab.training.distill import OBJECTIVES

            run_distill_study(args.preset, args.out, seed=args.seed, ks=tuple(args.ks or DISTILL_KS),
                              objectives=tuple(args.objectives or OBJECTIVES), steps=args.steps,
                              limit=args.limit, overrides=_overrides(args), command=command)
        elif args.command == "temporal":
            from vocolab.studies.temporal import run_temporal_study
            from vocolab.studies.temporal_settings import CellSettings

            own = CellSettings(temporal_steps=args.temporal_steps, temporal_objective=args.temporal_objective,
                               temporal_init=args.temporal_init, temporal_merge=args.temporal_merge,
                               temporal_questions=args.temporal_questions,
                               temporal_teacher_cache=args.temporal_teacher_cache,
                               temporal_batch=args.temporal_batch, temporal_attention=args.temporal_attention,
                               temporal_temperature=args.temporal_temperature, upper_steps=args.upper_steps,
                               upper_clips=args.upper_clips)
            run_temporal_study(args.preset, args.out, seed=args.seed, k=args.k, steps=args.steps,
                               limit=args.limit, train_clips=args.train_clips, overrides=_overrides(args),
                               command=command, off_lattice_steps=args.off_lattice_steps, settings=own)
        elif args.command == "mod":
            from vocolab.studies.mod import run_mod_study

            run_mod_study(args.preset, args.out, seed=args.seed, r=args.r, layers=args.layers, steps=args.steps,
                          limit=args.limit, train_clips=args.train_clips, overrides=_overrides(args),
                          command=command, off_lattice_steps=args.off_lattice_steps)
        elif args.command == "bench":
            from vocolab.studies.bench import STAGES, run_bench

            run_bench(args.preset, args.out or f"figures/bench-{args.preset}", seed=args.seed, steps=args.steps,
                      stages=tuple(args.stages or STAGES), overrides=_overrides(args), command=command)
        elif args.command == "ship":
            from vocolab.studies.ship import run_ship

            run_ship(args.preset, args.seed, args.out, names=args.models, command=command)
        elif args.command == "scaling":
            from vocolab.studies.scaling import METHODS as SCALING_METHODS
            from vocolab.studies.scaling import run_scaling

            run_scaling(args.preset, args.out, seed=args.seed, methods=tuple(args.methods or SCALING_METHODS),
                        ks=tuple(args.ks) if args.ks else None, steps=args.steps, limit=args.limit,
                        n_boot=args.bootstrap, overrides=_overrides(args), command=command)
    except USER_ERRORS as err:
        print(f"vocolab: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vocolab: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
