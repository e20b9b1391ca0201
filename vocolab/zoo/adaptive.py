"""Evaluating a method that picks its own K per image (PruMerge) on the upper-bound model.

Each image ends up with its own number (and choice) of kept patches, so its questions
are answered together, apart from other images': the layouts in one decoding batch must
agree on how many image slots precede the question, and the projector's per-patch
positions (`llm.image_positions`) on which patches they are.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from vocolab.inference.generate import greedy_generate
from vocolab.models.inputs import model_device
from vocolab.models.vision import pixels_to_tensor
from vocolab.zoo.registry import build_compressor


@torch.no_grad()
def prumerge_parts(vlm, pixels) -> tuple[torch.nn.Module, torch.Tensor, dict]:
    """The PruMerge compressor and what it reads: patch features and the vision tower's
    CLS attention and keys (all from one model, so the cost of each part can be measured)."""
    from vocolab.zoo.prumerge import prumerge_inputs

    cfg = vlm.cfg
    pixels = torch.as_tensor(np.asarray(pixels)) if not isinstance(pixels, torch.Tensor) else pixels
    device = model_device(vlm)
    features = vlm.encode_images(pixels.to(device))
    extras = prumerge_inputs(vlm.vision, pixels_to_tensor(pixels).to(device), layer=cfg.vision.feature_layer)
    compressor = build_compressor("prumerge", cfg, cfg.data.image_tokens).to(device)
    return compressor, features, extras


@torch.no_grad()
def prumerge_features(vlm, pixels) -> tuple[list[torch.Tensor], np.ndarray, list[torch.Tensor]]:
    """PruMerge's kept-and-merged patch features `[K_i, Dv]` of each image, the K_i, and
    the patches each image kept (`[K_i]`, where its tokens stand)."""
    compressor, features, extras = prumerge_parts(vlm, pixels)
    kept = compressor(features, extras=extras)
    return kept, np.array([len(x) for x in kept]), compressor.kept_patches(extras)


@torch.no_grad()
def predict_adaptive(vlm, tokenizer, images: np.ndarray, qs, k: int, batch_images: int = 64,
                     max_new_tokens: int = 3, progress: bool = True) -> tuple[list[str], np.ndarray]:
    """Greedy answers with PruMerge-compressed images; returns them and each question's K."""
    preds = [""] * len(qs)
    counts = np.zeros(len(qs), dtype=np.int64)
    items = np.unique(qs.item)
    for start in tqdm(range(0, len(items), batch_images), desc="prumerge", disable=not progress, leave=False):
        chunk = items[start : start + batch_images]
        kept, sizes, where = prumerge_features(vlm, images[chunk])
        for i, item in enumerate(chunk):  # one image's questions at a time: its tokens stand at its own patches
            group = np.nonzero(qs.item == item)[0]
            feats = kept[i][None].expand(len(group), -1, -1)
            q_ids = [tokenizer(qs.questions[r], add_special_tokens=False)["input_ids"] for r in group]
            with vlm.projector.placed_at(where[i]):
                out = greedy_generate(vlm, vlm.special, q_ids, features=feats, mode="causal",
                                      max_new_tokens=max_new_tokens, image_tokens=int(sizes[i]), voco_tokens=k)
            for r, tokens in zip(group, out):
                preds[r] = tokenizer.decode(tokens, skip_special_tokens=True)
                counts[r] = sizes[i]
    return preds, counts


__all__ = ["predict_adaptive", "prumerge_features", "prumerge_parts"]
