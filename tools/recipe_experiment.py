"""One recipe experiment, scored on the VALIDATION split (never the held-out one).

How the nano recipe was chosen (RESULTS.md, "What the recipe learned"): train some stages
of the recipe with config overrides, or only the upper stage from a saved pretrain stage,
and write the validation accuracy per family (and the VoCo model's retention when the voco
stage ran) with the stage seconds and provenance to `figures/recipe-experiments/<name>.json`.

    python tools/recipe_experiment.py F2 --seed 0 --stages clip,pretrain,upper \\
        --set llm.image_positions=true
    python tools/recipe_experiment.py SMALL_CLIP --preset small --stages clip,pretrain,upper
    python tools/recipe_experiment.py U2200 --pretrain RUNS/A/pretrain/checkpoints/last.ckpt \\
        --set train.instruct_steps=2200
    python tools/recipe_experiment.py V2100 --upper RUNS/A/upper/checkpoints/last.ckpt \\
        --set train.voco_steps=2100

`--clip-frames` also asks the trained upper bound (and, with `--pretrain`, the model it
started from) the scene families on the validation clips' middle frames, whose objects sit
between lattice cells: whether the scene model's perception carries over to clips.

`--clip-set KEY=VALUE ...` trains the clip stage on data with those overrides and the
LLM stages (pretrain, upper) on the data without them, in the recipe's order and seeding
(without overrides it reproduces the recipe's upper bound): for instance a CLIP tower
that sees off-lattice (jittered) scenes under an LLM that learns on lattice scenes.

`--upper` trains only the voco stage from a saved upper bound (its teacher too; with `--voco`,
from a saved voco stage: one more cycle of it, as the recipe's voco retry runs it) and also
scores the stage's quarter checkpoints, so one long run shows how VoCo's accuracy grows with
steps (the schedule is the whole stage's: a quarter checkpoint is not a shorter stage).
With `--train-ks 1,2,4,...` each of its batches draws K from those, and the one model is
scored at every one of them: a curriculum over K instead of one model per K.

Runs go under `$VOCOLAB_CACHE/runs/experiments/<name>`. Run one at a time: two training
processes on two cores slow each other down and their stage seconds mean nothing.
"""

import argparse
import json
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "figures" / "recipe-experiments"


def main(argv=None) -> int:
    from vocolab.cli import _parse_overrides
    from vocolab.core.config import Config
    from vocolab.core.presets import preset
    from vocolab.data.module import VoCoDataModule
    from vocolab.data.scenes import FAMILIES
    from vocolab.data.storage import cache_root
    from vocolab.evaluation.heldout import Questions, add_retention, bound_runs, model_run
    from vocolab.reporting.provenance import provenance
    from vocolab.training.recipe import run_recipe

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preset", default="nano", help="the preset trained from scratch (nano; small on a GPU)")
    ap.add_argument("--stages", default="clip,pretrain,upper,voco")
    ap.add_argument("--pretrain", default=None, help="a pretrain stage's last.ckpt: train only the upper stage from it")
    ap.add_argument("--upper", default=None, help="an upper stage's last.ckpt: train only the voco stage from it")
    ap.add_argument("--voco", default=None,
                    help="with --upper: a voco stage's last.ckpt to go on from (one more cycle, as a voco retry)")
    ap.add_argument("--clip-frames", action="store_true", help="also score on validation clips' middle frames")
    ap.add_argument("--train-ks", default=None, metavar="K,K,...",
                    help="with --upper: each voco batch draws its K from these; the model is scored at each")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    ap.add_argument("--clip-set", nargs="*", default=None, metavar="KEY=VALUE",
                    help="overrides for the clip stage's data only (trains clip, pretrain, upper)")
    args = ap.parse_args(argv)
    train_ks = tuple(int(k) for k in args.train_ks.split(",")) if args.train_ks else None
    if (train_ks or args.voco) and not args.upper:
        ap.error("--train-ks and --voco need --upper (they train only the voco stage)")
    overrides = _parse_overrides(args.set)
    clip_overrides = None if args.clip_set is None else _parse_overrides(args.clip_set)
    start, checks = time.perf_counter(), {}  # the recipe's own checks (clip retrieval, retries), when it ran
    runs = cache_root() / "runs" / "experiments" / args.name
    if args.upper:
        from lightning import seed_everything

        from vocolab.training.loading import load_model
        from vocolab.training.modules import VLMModule
        from vocolab.training.recipe import vlm_stage

        saved = load_model(args.upper)
        cfg = saved.cfg.override(**overrides, seed=args.seed)
        data = VoCoDataModule(cfg, turns=cfg.train.turns, progress=False)
        data.setup()
        seed_everything(cfg.seed, verbose=False)
        teacher = VLMModule(cfg, mask="causal", stage="upper", tokenizer=data.tokenizer)  # vlm_stage's init and teacher
        teacher.model.load_state_dict(saved.state_dict())
        upper, init = teacher.model, teacher
        if args.voco:  # a further cycle of a trained voco stage, as the recipe's voco retry runs it
            init = VLMModule(cfg, mask="voco", stage="voco", tokenizer=data.tokenizer)
            init.model.load_state_dict(load_model(args.voco).state_dict())
        t = time.perf_counter()
        voco = vlm_stage(cfg, data, runs, "voco", task="qa", mask="voco", steps=cfg.train.voco_steps, init=init,
                         k=train_ks, progress=False, teacher=teacher).model
        seconds = {"voco": round(time.perf_counter() - t, 1)}
    elif args.pretrain:
        import torch
        from lightning import seed_everything

        from vocolab.training.modules import VLMModule
        from vocolab.training.recipe import vlm_stage

        state = torch.load(args.pretrain, map_location="cpu", weights_only=False)
        cfg = Config.from_dict(state["hyper_parameters"]["cfg"]).override(**overrides, seed=args.seed)
        data = VoCoDataModule(cfg, turns=cfg.train.turns, progress=False)
        data.setup()
        pre = VLMModule(cfg, mask="causal", stage="pretrain", tokenizer=data.tokenizer)
        # a stage saved before frame deltas leaves them at their zero start (`VoCoVLM.load_backbone`)
        pre.model.load_backbone({k.removeprefix("model."): v for k, v in state["state_dict"].items()})
        val = data.split("val")
        init = {"scenes": model_run(pre.model.eval(), data.tokenizer, val, Questions.of(val), FAMILIES, name="init",
                                    method="full", mask="causal", k=cfg.voco.tokens, progress=False)
                } if args.clip_frames else None
        if init:
            init["clip_frames"] = clip_frames(pre.model, cfg, data.tokenizer)
            pre.model.train()
        seed_everything(cfg.seed, verbose=False)
        t = time.perf_counter()
        upper = vlm_stage(cfg, data, runs, "upper", task="qa", mask="causal", steps=cfg.train.instruct_steps,
                          init=pre, progress=False).model
        seconds, voco = {"upper": round(time.perf_counter() - t, 1)}, None
    elif clip_overrides is not None:
        cfg = preset(args.preset, seed=args.seed).override(**overrides)
        data, upper, seconds = clip_apart(cfg, cfg.override(**clip_overrides), runs)
        voco = None
    else:
        cfg = preset(args.preset, seed=args.seed).override(**overrides)
        trained = run_recipe(cfg, runs, progress=False, stages=tuple(args.stages.split(",")))
        data, seconds, checks = trained.data, trained.seconds, trained.validation
        upper = trained.upper.model if trained.upper else None
        voco = trained.voco.model if trained.voco else None
    val = data.split("val")
    qs = Questions.of(val)
    curve = {}
    if args.upper:  # how the voco stage's accuracy grew: its quarter checkpoints
        for ckpt in sorted((runs / "voco" / "checkpoints").glob("step*.ckpt"), key=lambda p: int(p.stem[4:])):
            run = model_run(load_model(str(ckpt)), data.tokenizer, val, qs, FAMILIES, name="voco", method="voco",
                            mask="voco", k=cfg.voco.tokens, progress=False)
            curve[ckpt.stem] = round(run["accuracy"], 4)
            print(f"{args.name} {ckpt.stem}: validation {curve[ckpt.stem]}", flush=True)
    if voco is not None:
        runs_ = bound_runs(upper.eval(), data.tokenizer, data.splits["train"], val, qs, FAMILIES,
                           k_lower=cfg.voco.tokens, progress=False)
        for k in train_ks or (cfg.voco.tokens,):  # one VoCo model trained at many K answers at each
            runs_.append(model_run(voco.eval(), data.tokenizer, val, qs, FAMILIES, method="voco", mask="voco", k=k,
                                   name=f"voco-k{k}" if train_ks else "voco", progress=False))
        runs_ = add_retention(runs_)
    else:
        runs_ = [model_run(upper.eval(), data.tokenizer, val, qs, FAMILIES, name="upper", method="full", mask="causal",
                           k=cfg.voco.tokens, progress=False)]
    command = "python tools/recipe_experiment.py " + " ".join(sys.argv[1:] if argv is None else argv)
    body = {"name": args.name, "split": "val", "questions": len(qs), "overrides": overrides, "stage_seconds": seconds,
            **({"clip_overrides": clip_overrides} if clip_overrides is not None else {}),
            **({"voco_checkpoints": curve} if curve else {}), **({"recipe_checks": checks} if checks else {}),
            **({"clip_frames": clip_frames(upper, cfg, data.tokenizer)} if args.clip_frames else {}),
            **({"init": {"scenes": _brief(init["scenes"]), "clip_frames": init["clip_frames"]}}
               if args.clip_frames and args.pretrain else {}),
            "runs": {r["name"]: {"accuracy": round(r["accuracy"], 4), "retention": r.get("retention"),
                                 "per_family": {f: round(v, 3) for f, v in r["per_family"].items()}} for r in runs_},
            "provenance": provenance(command, cfg.preset, cfg.seed, time.perf_counter() - start, OUT)}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{args.name}.json").write_text(json.dumps(body, indent=1) + "\n")
    print(json.dumps(body["runs"], indent=1))
    return 0


def _brief(run: dict) -> dict:
    return {"accuracy": round(run["accuracy"], 4), "per_family": {f: round(v, 3) for f, v in run["per_family"].items()}}


def clip_apart(cfg, clip_cfg, runs: Path):
    """clip (on `clip_cfg`'s data) -> pretrain -> upper (on `cfg`'s), seeded and ordered as
    `run_recipe` does; returns the LLM stages' data module, the upper bound and the stage seconds."""
    from lightning import seed_everything

    from vocolab.data.module import VoCoDataModule
    from vocolab.training.recipe import clip_stage, vlm_stage

    seed_everything(cfg.seed, verbose=False)
    data = VoCoDataModule(cfg, turns=cfg.train.turns, progress=False)
    data.setup()
    clip_data = VoCoDataModule(clip_cfg, turns=cfg.train.turns, progress=False, tokenizer=data.tokenizer)
    clip_data.setup()
    seconds, t = {}, time.perf_counter()
    clip = clip_stage(cfg, clip_data, runs, progress=False)
    seconds["clip"], t = round(time.perf_counter() - t, 1), time.perf_counter()
    pre = vlm_stage(cfg, data, runs, "pretrain", task="caption", mask="causal", steps=cfg.train.pretrain_steps,
                    init=clip, progress=False)
    seconds["pretrain"], t = round(time.perf_counter() - t, 1), time.perf_counter()
    upper = vlm_stage(cfg, data, runs, "upper", task="qa", mask="causal", steps=cfg.train.instruct_steps,
                      init=pre, progress=False).model
    seconds["upper"] = round(time.perf_counter() - t, 1)
    return data, upper, seconds


def clip_frames(model, cfg, tokenizer) -> dict:
    """The scene families asked about the validation clips' middle frames (`frame_questions`)."""
    from vocolab.data.module import VoCoDataModule
    from vocolab.data.scenes import FAMILIES
    from vocolab.evaluation.clips import frame_questions
    from vocolab.evaluation.heldout import predict, score

    middle = cfg.data.frames // 2
    clips = VoCoDataModule(cfg, kind="clips", progress=False, tokenizer=tokenizer).split("val")
    qs = frame_questions(cfg, "val", None, middle, cfg.seed)
    got = score(predict(model.eval(), tokenizer, clips.images[:, middle], qs, "causal", cfg.voco.tokens,
                        progress=False), qs, FAMILIES)
    print(f"clip frames (validation): {got['accuracy']:.3f}", flush=True)
    return _brief(got) | {"questions": len(qs)}


if __name__ == "__main__":
    sys.exit(main())
