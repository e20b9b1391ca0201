"""One video experiment, scored on the VALIDATION clips (never the held-out ones).

The temporal study's video upper bound (`vocolab temporal`, cell `video-upper`: clip QA with
every frame's V tokens, causal mask, from the shared scene model of `studies.common.base_model`)
is what target 5 asks to reach 0.60. This trains that one model with overrides that touch
only the clip-trained model (the scene model stays the study's), and writes its validation
accuracy per temporal family, the scene families asked about the validation clips' middle
frames (does perception carry over to objects between lattice cells?) and the seconds per
step to `figures/video-experiments/<name>.json`:

    python tools/video_experiment.py VU400 --steps 400                 # the study's cell, on validation
    python tools/video_experiment.py VU400_tv --steps 400 --set train.train_vision=true
    python tools/video_experiment.py VU1200_8k --steps 1200 --train-clips 8000
    python tools/video_experiment.py VU400_saved --saved RUNS/sweep-nano-seed0/temporal/models/video-upper
    python tools/video_experiment.py VU1600_8k_fp_p3 --steps 1600 --train-clips 8000 --perception 3
    python tools/video_experiment.py VU800_8k_amd_cap --steps 800 --train-clips 8000 --caption
    python tools/video_experiment.py VU1600_8k_fp_fr --steps 1600 --train-clips 8000 --frame-init random
    python tools/video_experiment.py VU1600_8k_fp_sc32 --steps 1600 --train-clips 8000 \\
        --frame-init sincos --frame-init-std 0.32
    python tools/video_experiment.py VU1600_8k_nodeltas --steps 1600 --train-clips 8000 --no-deltas

`--saved` scores a saved video model (a checkpoint folder, as the study keeps them) instead of
training one: the committed study's cell, on validation, without training it again.

`--scene CKPT` starts from another scene model: an upper stage's `last.ckpt`, say that of a
`tools/recipe_experiment.py --pretrain` run on jittered scenes, instead of the study's.

`--set` overrides the clip model's config (say, a trainable vision tower or another learning
rate); `--train-clips` draws more training clips (generation is cheap; the validation and
held-out clips do not change). `--perception N` adds N questions per training clip that
ask what is in the clip rather than what happens in it (`perception_questions`: colour,
shape, existence of the objects that keep their colour), a curriculum that asks the clip
model to see objects between the lattice cells; the questions it is scored on do not
change. `--frame-init random` starts the clip model's frame embeddings at a fixed random code
per frame (RMS `--frame-init-std`, default `llm.init_std`; `--frame-init-seed` draws another)
instead of the scene model's own start: what it does depends on the draw (RESULTS.md); `--frame-init
sincos` at the fixed code `models.projector.sincos_frames` of RMS `--frame-init-std`; `--frame-init
zeros` at zero. The scene model's own start is that code at `llm.frame_positions_rms` since it became
the package's default; the runs before it (no `--frame-init` in their command) started at zero.
`--no-deltas` keeps the package's frame deltas (`models.frame_deltas`: each image token of frame t also
carries a learned projection of its feature change since frame t - 1) frozen at their zero start: the
control without them. The runs before the package had them (their results files hold no `frame_deltas`)
had none, save those run with the `--deltas` of that time (`tools/frame_deltas.py`, since removed: the same
change, projected with a bias, scored teacher-forced), which hold `"frame_deltas": true`.
`--positions shared` gives frames 2..T frame 1's LLM positions (`shared_frame_positions`: to RoPE every
frame sits where a scene's image sat) in training and scoring; the streaming answerer knows only the
package's positions, so such a run is scored by one teacher-forced forward per question (`teacher_forced_run`,
equal to greedy exact match; every run records it beside the streaming score). `--caption` adds each
training clip's caption ("a small red circle moves left and turns green , ...") as a last turn after its
questions: dense supervision of every object's motion. `--set data.train_min_objects=2` thins the
training clips (2..max_objects objects; validation and held-out clips unchanged). Runs go under
`$VOCOLAB_CACHE/runs/experiments/<name>`. Run one at a time: two training processes on two cores slow
each other down.
"""

import argparse
import json
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "figures" / "video-experiments"


def main(argv=None) -> int:
    from recipe_experiment import _brief, clip_frames

    from vocolab.cli import _parse_overrides
    from vocolab.data.clips import TEMPORAL_FAMILIES
    from vocolab.data.module import VoCoDataModule
    from vocolab.data.storage import cache_root
    from vocolab.evaluation.clips import clip_run
    from vocolab.evaluation.heldout import Questions
    from vocolab.models.checkpoint import load_checkpoint
    from vocolab.models.projector import sincos_frames
    from vocolab.reporting.provenance import provenance
    from vocolab.studies.common import QUICK, base_model, runs_dir, study_config
    from vocolab.training.loading import load_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=400, help="clip-QA training steps (the study's cell: 400)")
    ap.add_argument("--train-clips", type=int, default=None, help="training clips (default data.train_clips)")
    ap.add_argument("--saved", default=None, help="score this saved model folder instead of training")
    ap.add_argument("--perception", type=int, default=0, help="perception questions added per training clip")
    ap.add_argument("--caption", action="store_true", help="add the clip's caption as a last training turn")
    ap.add_argument("--frame-init", choices=("base", "zeros", "random", "sincos"), default="base",
                    help="the frame embeddings' start: the scene model's own, zeros, a random or a sine-cosine code")
    ap.add_argument("--frame-init-std", type=float, default=None, help="RMS of the code (default llm.init_std)")
    ap.add_argument("--frame-init-seed", type=int, default=0, help="which random code (another draw at the same RMS)")
    ap.add_argument("--scene", default=None, metavar="CKPT",
                    help="start from this upper stage's last.ckpt (say, a recipe experiment's) instead of the study's")
    ap.add_argument("--positions", choices=("sequential", "shared"), default="sequential",
                    help="the LLM positions of frames 2..T: after frame 1's (the package's) or frame 1's own")
    ap.add_argument("--no-deltas", action="store_true",
                    help="keep the frame deltas at zero (models.frame_deltas): the control without them")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides of the clip model only")
    args = ap.parse_args(argv)
    if args.no_deltas and args.saved:
        ap.error("--no-deltas is a way to train: not with --saved")
    overrides = _parse_overrides(args.set)
    start = time.perf_counter()
    cfg = study_config("nano", args.seed, None, QUICK)  # the scene model's config: the study's
    scenes = VoCoDataModule(cfg, turns=cfg.train.turns, progress=False)
    scenes.setup()
    base = load_model(args.scene).cpu().eval() if args.scene else base_model(cfg, runs_dir(cfg), scenes, progress=False)
    tok = scenes.tokenizer
    frame_std = args.frame_init_std or cfg.llm.init_std
    frame_rms = {"base": cfg.llm.frame_positions_rms, "zeros": 0.0}.get(args.frame_init, frame_std)  # the start's RMS
    if args.frame_init == "random":
        base = with_random_frame_embeddings(base, frame_std, args.seed, args.frame_init_seed)
    elif args.frame_init in ("sincos", "zeros"):
        base = with_frame_embeddings(base, sincos_frames(cfg.data.frames, cfg.llm.hidden_size, frame_rms))
    cell = cfg.override(**{"voco.mask": "causal", **overrides})
    n_train = args.train_clips or cfg.data.train_clips
    clips = VoCoDataModule(cell, kind="clips", turns=cell.train.turns, train_n=n_train, progress=False, tokenizer=tok)
    if args.perception:
        add_perception_questions(clips.split("train"), cell, args.perception, n_train)
    if args.caption:
        add_caption_turn(clips.split("train"))
    t = time.perf_counter()
    if args.saved:
        model, saved_cfg, meta = load_checkpoint(args.saved)
        args.steps, n_train, train_s = meta.get("steps", 0), saved_cfg.data.train_clips, meta.get("train_s", 0.0)
    else:
        model = train_video_upper(cell, clips, base, args.steps, cache_root() / "runs" / "experiments" / args.name,
                                  shared=args.positions == "shared", no_deltas=args.no_deltas)
        train_s = round(time.perf_counter() - t, 1)
    val = clips.split("val")
    qs = Questions.of(val)
    forced = teacher_forced_run(model, clips, shared=args.positions == "shared")
    if args.positions == "shared":  # the streaming answerer does not know them
        run = forced
    else:
        run = clip_run(model, tok, val.images, qs, TEMPORAL_FAMILIES, name="video-upper", method="full",
                       mask="causal", k=cell.voco.tokens, tokens=cell.data.image_tokens, progress=False)
    command = "python tools/video_experiment.py " + " ".join(sys.argv[1:] if argv is None else argv)
    body = {"name": args.name, "split": "val", "questions": len(qs), "steps": args.steps, "train_clips": n_train,
            **({"perception_questions": args.perception} if args.perception else {}),
            **({"caption_turn": CAPTION_QUESTION} if args.caption else {}),
            "frame_deltas": bool(model.frame_deltas.weight.abs().sum() > 0),  # the scored model has learned ones
            "frame_init": args.frame_init, "frame_init_std": frame_rms, "positions": args.positions,
            **({"frame_init_seed": args.frame_init_seed} if args.frame_init == "random" else {}),
            "overrides": overrides, "train_s": train_s, "s_per_step": round(train_s / max(1, args.steps), 3),
            **({"saved": args.saved} if args.saved else {}),
            **({"scene": args.scene} if args.scene else {}),
            "video_upper": _brief(run) | {"accuracy_vs_frames": run.get("accuracy_vs_frames")},
            "teacher_forced": forced,
            "clip_frames": {"scene_model": clip_frames(base, cfg, tok), "video_model": clip_frames(model, cfg, tok)},
            "provenance": provenance(command, cfg.preset, cfg.seed, time.perf_counter() - start, OUT)}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{args.name}.json").write_text(json.dumps(body, indent=1) + "\n")
    print(json.dumps({k: body[k] for k in ("video_upper", "clip_frames", "train_s")}, indent=1))
    return 0


def train_video_upper(cell, clips, base, steps: int, out: Path, progress: bool = True, shared: bool = False,
                      no_deltas: bool = False):
    """The study's `video-upper` cell (`TemporalStudy.model`): clip QA under the causal mask
    from the scene model `base`, seeded as the study seeds it; `cell` and `clips` may differ.
    `shared`: every frame's patches at frame 1's LLM positions (`shared_frame_positions`); `no_deltas`:
    the frame deltas stay frozen at zero (the clip stage's setup would train them)."""
    from lightning import seed_everything

    from vocolab.training.modules import VLMModule
    from vocolab.training.recipe import fine_tune

    class VideoUpper(VLMModule):  # the study's module (`stage_module` gives a plain VLMModule here)
        def setup(self, stage: str) -> None:
            super().setup(stage)  # clips: frame embeddings and deltas trainable
            if no_deltas:
                self.model.frame_deltas.requires_grad_(False)

        def forward(self, batch, mask=None):
            if not shared:
                return super().forward(batch, mask)
            pos = shared_frame_positions(batch.layouts, batch.input_ids.shape[1]).to(batch.input_ids.device)
            return self.model(batch.input_ids, batch.layouts, pixels=batch.pixels, features=batch.features,
                              mask=mask or self.mask, labels=batch.labels, position_ids=pos)

    seed_everything(cell.seed, verbose=False)
    module = VideoUpper(cell, mask="causal", stage="video-upper", steps=max(1, steps), tokenizer=clips.tokenizer)
    return fine_tune(module, clips, cell, out, "video-upper", steps, init=base, progress=progress)


def shared_frame_positions(layouts, length: int):
    """`[B, L]` LLM positions in which frames 2..T repeat frame 1's patch positions and the text
    follows as if one frame came before it: to RoPE every frame sits where a scene's image sat
    (the question as far from each frame as from a scene), and only the frame embeddings say
    which frame a patch is from. The package's positions (`core.layout.position_ids`) count on."""
    import torch

    pos = torch.arange(length).repeat(len(layouts), 1)
    for b, layout in enumerate(layouts):
        first, later = layout.frames[:1], layout.frames[1:]
        for frame in later:
            pos[b, frame.image.start:frame.image.stop] = torch.arange(first[0].image.start, first[0].image.stop)
            pos[b, frame.voco.start:frame.voco.stop] = torch.arange(first[0].voco.start, first[0].voco.stop)
        pos[b, layout.text.start:] -= sum(f.image.length + f.voco.length for f in later)
    return pos


def teacher_forced_run(model, clips, shared: bool = False) -> dict:
    """Validation accuracy per family from one teacher-forced forward per question (every answer
    token and EOS the argmax: what greedy decoding's exact match is), under the package's
    positions or `shared_frame_positions`: the check the streaming answerer cannot make for the latter."""
    import torch

    from vocolab.evaluation.metrics import teacher_forced_hits

    split, hits = clips.split("val"), []
    with torch.no_grad():
        for batch in clips.val_dataloader():
            pos = shared_frame_positions(batch.layouts, batch.input_ids.shape[1]) if shared else None
            logits = model(batch.input_ids, batch.layouts, pixels=batch.pixels, features=batch.features,
                           mask="causal", position_ids=pos).logits
            hits += teacher_forced_hits(logits, batch.labels).tolist()
    families = [split.families[i][j] for i, j in split.examples("qa")]
    per_family = {f: round(sum(h for h, g in zip(hits, families) if g == f) / families.count(f), 4)
                  for f in dict.fromkeys(families)}
    return {"accuracy": round(sum(hits) / len(hits), 4), "per_family": per_family, "questions": len(hits)}


def with_random_frame_embeddings(base, std: float, seed: int, draw: int = 0):
    """A copy of the scene model whose frame embeddings start at a fixed random code per frame
    (RMS `std`, as the sine-cosine patch positions) instead of zeros: frames differ in the
    values from the first step, as patches do, rather than once gradients have grown them.
    `draw` picks another code for the same `seed` (the code depends on the draw: RESULTS.md)."""
    import torch

    gen = torch.Generator().manual_seed(1_000_003 + seed + 7919 * draw)
    return with_frame_embeddings(base, torch.randn(base.frame_positions.shape, generator=gen) * std)


def with_frame_embeddings(base, code):
    """A copy of `base` whose frame embeddings start at `code`; `base` keeps its own."""
    import copy

    import torch

    model = copy.deepcopy(base)
    with torch.no_grad():
        model.frame_positions.copy_(code)
    return model


def perception_questions(clip, rng, n: int, cfg) -> list:
    """n questions about what a clip shows, true in every frame an object is visible in:
    "what color is the {shape} ?", "what shape is the {color} object ?", "is there a
    {color} {shape} ?", balanced as the scene questions are. The object that changes colour
    is never asked about, and no question names an attribute it had."""
    from vocolab.data.scenes import QA, pick_balanced, round_robin

    steady = [t for t in clip.tracks if t.new_color is None]
    changer = [t for t in clip.tracks if t.new_color is not None]
    steady_pairs = {(t.color, t.shape) for t in steady}
    shown = steady_pairs | {(c, t.shape) for t in changer for c in (t.color, t.new_color)}
    names = {"shape": [t.shape for t in clip.tracks], "color": [t.color for t in clip.tracks] +
             [t.new_color for t in changer]}  # every value an object shows, to keep "the X" unique
    templates = {"color": "what color is the {shape} ?", "shape": "what shape is the {color} object ?",
                 "exist": "is there a {color} {shape} ?"}

    def ask(family: str, asked: set[str]):
        by_answer: dict[str, list] = {}
        if family == "exist":
            for pair in ((c, s) for c in cfg.colors for s in cfg.shapes):
                q = templates["exist"].format(color=pair[0], shape=pair[1])
                if q not in asked and (pair in steady_pairs or pair not in shown):
                    by_answer.setdefault("yes" if pair in steady_pairs else "no", []).append(q)
        else:
            named_by = "shape" if family == "color" else "color"
            for t in steady:
                q = templates[family].format(**{named_by: getattr(t, named_by)})
                if names[named_by].count(getattr(t, named_by)) == 1 and q not in asked:
                    by_answer.setdefault(getattr(t, family), []).append(q)
        got = pick_balanced(rng, by_answer)
        return got and QA(got[1], got[0], family, templates[family])

    return round_robin(ask, tuple(templates), rng, n)


def add_perception_questions(split, cfg, n: int, count: int) -> None:
    """Append `perception_questions` to every training clip of `split` (in place), from a
    random stream of their own, so the clips' temporal questions stay what they were."""
    import numpy as np

    from vocolab.data.clips import Clip
    from vocolab.data.storage import iter_rows, split_seed

    seed = split_seed(cfg.data, "train")
    for i, row in enumerate(iter_rows(cfg.data, "clips", "train", count, render=False)):
        if row["question"] != split.questions[i][: len(row["question"])]:
            raise ValueError(f"add_perception_questions: training clip {i} is not the split's")
        rng = np.random.default_rng([seed, 7, i])
        qas = perception_questions(Clip.from_json(row["objects"]), rng, n, cfg.data)
        append_turns(split, i, [(qa.question, qa.answer, qa.family, qa.template) for qa in qas])


CAPTION_QUESTION = "what moves ?"


def add_caption_turn(split) -> None:
    """Append ("what moves ?", the clip's caption) as the last turn of every training clip of
    `split` (in place): every object's direction, its colour change and, in the caption's order,
    when it enters, supervised at once. Last, so no question turn can read its answer from it."""
    for i, text in enumerate(split.captions):
        append_turns(split, i, [(CAPTION_QUESTION, text, "caption", CAPTION_QUESTION)])


def append_turns(split, i: int, turns) -> None:
    """Append (question, answer, family, template) turns after item i's own, keeping the
    split's four parallel lists in step."""
    for column, values in zip((split.questions, split.answers, split.families, split.templates), zip(*turns)):
        column[i] = [*column[i], *values]


if __name__ == "__main__":
    sys.exit(main())
