"""Reference greedy decoding: one full masked forward over the whole sequence per step.

No KV cache, no cleverness: at each step every unfinished sample's sequence
`[BOS] ([IMG x V][VOCO x K]) x T [question] [generated so far]` is rebuilt with its own
`Layout` (`core.layout.assemble`), right-padded into a batch, and run through the
model under a mask mode; the argmax at each sample's own last position (over tokens that
may be generated: `greedy_choice`) is appended. Because the mask is rebuilt from the
layout every step, it can never drift (the official VoCo-LLaMA code's mask slid into the
prompt after the first answer token).

It is the ground truth the VoCo cache is tested against, and the generic decoder the
evaluation uses for any model and mask: the causal upper bound, VoCo, video, blind runs
(no pixels). Image features are computed once up front, not at every step.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from vocolab.core.layout import SpecialIds, assemble, pad_batch
from vocolab.models.inputs import model_device


def greedy_choice(logits, ids: SpecialIds):
    """Argmax over the last axis among tokens that may be generated: BOS, padding, image
    and VoCo ids lay out a sequence and are never an answer (a model that was not
    trained under a mask, such as the lower bound, may otherwise pick one, and an image
    token without its image cannot be embedded)."""
    banned = [ids.bos, ids.pad, ids.image, ids.voco]
    return logits.index_fill(-1, logits.new_tensor(banned, dtype=torch.long), float("-inf")).argmax(-1)


def _frames_of(x: torch.Tensor, single: int) -> int:
    if x.dim() == single:
        return 1
    if x.dim() == single + 1:
        return x.shape[1]
    raise ValueError(f"greedy_generate: image input of shape {tuple(x.shape)} is neither a batch of "
                     f"images nor a batch of clips")


@torch.no_grad()
def greedy_generate(
    model,
    ids: SpecialIds,
    questions: Sequence[Sequence[int]],
    pixels=None,
    mode: str = "voco",
    max_new_tokens: int = 4,
    image_tokens: int | None = None,
    voco_tokens: int | None = None,
    *,
    features=None,
    eos_id: int | None = None,
    return_logits: bool = False,
    encode: bool = True,
):
    """Batched greedy answers to `questions` (token id lists, no BOS), one image or clip each.

    `pixels`: uint8 `[B, H, W, 3]` images or `[B, T, H, W, 3]` clips (T frames, each with
    its own K VoCo tokens), or None for text-only (blind) samples; alternatively CLIP
    `features` `[B, V, Dv]` / `[B, T, V, Dv]`. `image_tokens` (V) and `voco_tokens` (K)
    default to `model.cfg`; K = 0 lays out no VoCo tokens (plain causal attention).
    With `encode` (default) pixels are run through `model.encode_images` once and the
    features reused every step; pass `encode=False` for models that must see pixels.

    Each sample stops at `eos_id` (default `ids.eos`), which is **not included** in its
    tokens. Returns the token lists, or `(tokens, logits)` with `return_logits`, where
    logits[b] is a float tensor `[steps_b, vocab]` of the logits each step chose from.
    """
    if max_new_tokens < 0:
        raise ValueError(f"greedy_generate: max_new_tokens must be >= 0, got {max_new_tokens}")
    if pixels is not None and features is not None:
        raise ValueError("greedy_generate: give pixels or features, not both")
    cfg = getattr(model, "cfg", None)
    v = cfg.image_slots if image_tokens is None else image_tokens
    k = cfg.voco.tokens if voco_tokens is None else voco_tokens
    eos = ids.eos if eos_id is None else eos_id
    batch = len(questions)
    device = model_device(model)

    if pixels is not None:
        pixels = torch.from_numpy(np.ascontiguousarray(pixels)) if isinstance(pixels, np.ndarray) else pixels
        frames = _frames_of(pixels, 4)
        if encode and hasattr(model, "encode_images"):
            features, pixels = model.encode_images(pixels.to(device)), None
    if features is not None:
        features = torch.from_numpy(np.ascontiguousarray(features)) if isinstance(features, np.ndarray) else features
        frames = _frames_of(features, 3)
    image = pixels if pixels is not None else features
    if image is None:
        frames, v, k = 0, 0, 0
    elif len(image) != batch:
        raise ValueError(f"greedy_generate: {len(image)} images for {batch} questions")

    tokens: list[list[int]] = [[] for _ in range(batch)]
    logits: list[list[torch.Tensor]] = [[] for _ in range(batch)]
    active = list(range(batch))
    for _ in range(max_new_tokens):
        if not active:
            break
        seqs, layouts = zip(*(assemble(questions[b], tokens[b], ids, frames=frames, image_tokens=v,
                                       voco_tokens=k, add_eos=False) for b in active))
        input_ids = pad_batch(seqs, ids.pad).to(device)
        kwargs = {}
        if image is not None:
            sel = torch.tensor(active, device=image.device)
            kwargs["pixels" if pixels is not None else "features"] = image.index_select(0, sel)
        out = model(input_ids, list(layouts), mask=mode, **kwargs).logits
        last = out[torch.arange(len(active), device=out.device),
                   torch.tensor([l.length - 1 for l in layouts], device=out.device)]
        choice = greedy_choice(last, ids).tolist()
        still = []
        for row, b in enumerate(active):
            logits[b].append(last[row].float())
            if choice[row] == eos:
                continue
            tokens[b].append(choice[row])
            still.append(b)
        active = still
    if return_logits:
        vocab = getattr(model, "vocab_size", 0)
        return tokens, [torch.stack(l) if l else torch.empty(0, vocab) for l in logits]
    return tokens


__all__ = ["greedy_choice", "greedy_generate"]
