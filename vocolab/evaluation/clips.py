"""Held-out evaluation on clips, streamed: accuracy after every frame.

VoCo models compress a clip frame by frame (`inference.compression.compress_frame`) and
answer after each frame from the growing cache; full-token and pooled models answer
from the first t frames. So "accuracy against frames" (t = 1..T) comes from the same
pass that gives the reported accuracy (t = T). Many clip questions cannot be answered
from fewer frames (a direction needs two, a visible count all of them): that is what
the curve shows.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from vocolab.models.inputs import model_device


@torch.no_grad()
def predict_frames(model, tokenizer, clips: np.ndarray, qs, mask: str, k: int, *,
                   frames: Sequence[int] | None = None, batch_clips: int = 64,
                   max_new_tokens: int | None = None, eos_id: int | None = None, return_logits: bool = False,
                   progress: bool = True, desc: str = "eval"):
    """Greedy answers to every question after the first t frames of its clip, for each t in `frames`.

    `clips` uint8 `[N, T, H, W, 3]`; `qs` a `vocolab.evaluate.Questions` whose `item`
    indexes the clips. `frames` defaults to 1..T. Returns `{t: [answer text per question]}`,
    and with `return_logits` also `{t: [float logits [steps, vocab] per question]}`.

    * mask `video` (VoCo models): each clip is compressed frame by frame with
      `compress_frame` (one growing `VoCoCache`, K tokens per frame) and the questions
      are answered against the cache after frame t: streaming, each frame compressed once;
    * mask `causal` (full tokens, or a zoo compressor's K tokens per frame): the clip's
      features are computed once and the questions answered with the first t frames in
      the sequence (`generate.greedy_generate`); `k` VoCo slots per frame.
    """
    from vocolab.evaluation.heldout import MAX_NEW_TOKENS
    from vocolab.inference.answering import answer
    from vocolab.inference.compression import compress_frame
    from vocolab.inference.generate import greedy_generate

    if mask not in ("video", "causal"):
        raise ValueError(f"predict_frames: mask must be 'video' (VoCo cache) or 'causal', got {mask!r}")
    clips = np.asarray(clips)
    if clips.ndim != 5:
        raise ValueError(f"predict_frames: expected clips [N, T, H, W, 3], got shape {clips.shape}")
    total = clips.shape[1]
    frames = list(range(1, total + 1)) if frames is None else sorted(set(int(t) for t in frames))
    if not frames or frames[0] < 1 or frames[-1] > total:
        raise ValueError(f"predict_frames: frames {frames} outside 1..{total}")
    new_tokens = MAX_NEW_TOKENS if max_new_tokens is None else max_new_tokens
    model.eval()
    device = model_device(model)
    preds = {t: [""] * len(qs) for t in frames}
    logits = {t: [None] * len(qs) for t in frames}
    items = np.unique(qs.item)
    for start in tqdm(range(0, len(items), batch_clips), desc=desc, disable=not progress, leave=False):
        chunk = items[start : start + batch_clips]
        rows = np.nonzero(np.isin(qs.item, chunk))[0]
        q_ids = [tokenizer(qs.questions[r], add_special_tokens=False)["input_ids"] for r in rows]
        local = {item: i for i, item in enumerate(chunk.tolist())}
        of_row = [local[int(qs.item[r])] for r in rows]
        pixels = torch.from_numpy(np.ascontiguousarray(clips[chunk])).to(device)

        def keep(t, out):
            tokens, step_logits = out if return_logits else (out, [None] * len(rows))
            for r, toks, lg in zip(rows, tokens, step_logits):
                preds[t][r] = tokenizer.decode(toks, skip_special_tokens=True)
                logits[t][r] = lg

        if mask == "video":
            cache = None
            for t in range(1, frames[-1] + 1):
                cache = compress_frame(model, cache, pixels[:, t - 1], t - 1, k)
                if t in preds:
                    keep(t, answer(model, cache.select(of_row), q_ids, new_tokens, eos_id=eos_id,
                                   return_logits=return_logits))
        else:
            features = model.encode_images(pixels)[of_row]  # [R, T, V, Dv]: one vision pass per clip
            for t in frames:
                keep(t, greedy_generate(model, model.special, q_ids, features=features[:, :t], mode="causal",
                                        max_new_tokens=new_tokens, voco_tokens=k, eos_id=eos_id,
                                        return_logits=return_logits))
    return (preds, logits) if return_logits else preds


def clip_run(model, tokenizer, clips: np.ndarray, qs, families, *, name: str, method: str, mask: str, k: int,
             tokens: int, curve: bool = True, progress: bool = True) -> dict:
    """One results-file run on clips: accuracy with all T frames (and per family), plus
    `accuracy_vs_frames` (t -> accuracy) and `per_family_vs_frames` when `curve`."""
    from vocolab.evaluation.heldout import score

    total = clips.shape[1]
    preds = predict_frames(model, tokenizer, clips, qs, mask, k, frames=None if curve else [total],
                           progress=progress, desc=name)
    run = {"name": name, "method": method, "tokens": tokens, "mask": mask, "frames": total}
    run |= score(preds[total], qs, families)
    if curve:
        scores = {t: score(p, qs, families) for t, p in preds.items()}
        run["accuracy_vs_frames"] = {str(t): s["accuracy"] for t, s in scores.items()}
        run["per_family_vs_frames"] = {str(t): s["per_family"] for t, s in scores.items()}
    return run


def frame_questions(cfg, split: str, n: int | None, frame: int, seed: int):
    """Scene-family questions (`vocolab.data.scenes.FAMILIES`) about frame `frame` of each
    clip of a split, built from that frame's symbolic state (`Clip.frame_scene`): what a
    scene model is asked to see on clip frames, whose objects sit between lattice cells."""
    from vocolab.data.clips import Clip
    from vocolab.data.scenes import scene_questions
    from vocolab.data.storage import iter_rows
    from vocolab.evaluation.heldout import Questions

    rng, per = np.random.default_rng(seed), cfg.data.questions_per_scene
    asked = [(i, qa) for i, row in enumerate(iter_rows(cfg.data, "clips", split, n, render=False))
             for qa in scene_questions(Clip.from_json(row["objects"]).frame_scene(frame), rng, per, cfg.data)]
    return Questions(np.array([i for i, _ in asked]), [qa.question for _, qa in asked],
                     [qa.answer for _, qa in asked], [qa.family for _, qa in asked])


def scene_perception(model, tokenizer, scenes, frames, frame_qs, k: int, progress: bool = False) -> dict:
    """A scene model asked the scene families on held-out `scenes` and on clip `frames` (`frame_qs`,
    as many questions each). Scene objects sit on the lattice cells; clip objects move a fraction of a
    cell per frame, so they sit between cells. The gap is how much of its perception a clip model has
    to learn again before it can compare frames."""
    from vocolab.data.scenes import FAMILIES
    from vocolab.evaluation.heldout import Questions, predict, score

    out = {}
    for name, images, qs in (("scenes", scenes.images, Questions.of(scenes, len(frame_qs))),
                             ("clip_frames", frames, frame_qs)):
        got = score(predict(model, tokenizer, images, qs, "causal", k, progress=progress,
                            desc=f"scene model on {name}"), qs, FAMILIES)
        out[name] = {"accuracy": got["accuracy"], "per_family": got["per_family"], "questions": len(qs)}
    return out


def clip_families(split) -> list[str]:
    from vocolab.data.clips import TEMPORAL_FAMILIES

    found = sorted({f for fams in split.families for f in fams})
    return list(dict.fromkeys([f for f in TEMPORAL_FAMILIES if f in found] + found))


__all__ = ["clip_families", "clip_run", "frame_questions", "predict_frames", "scene_perception"]
