"""A VoCo training forward whose image tokens run without autograd (`train.image_grad = False`).

Under the `voco` and `video` masks an image token attends to BOS and image tokens only (its
frame's, under `video`): its hidden states never depend on the VoCo tokens or the text. So the
forward can run in two passes that give the one-pass values exactly: first BOS and every image
token, without autograd, into a `transformers.DynamicCache` (each at its original position), then
the VoCo tokens and the text, with autograd, attending to that cache through the same mask's rows.
What changes is the gradient: the loss reaches the weights only through the VoCo and text tokens,
not through how the image tokens' keys and values would move. Image tokens are most of a clip's
sequence (4 x 64 of about 360 at nano), so their backward, and their activations kept for it, are
most of a step's work; the two passes skip it (the study's cost on a 2-core CPU: RESULTS.md).
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.modeling_outputs import CausalLMOutputWithPast

from vocolab.core.masks import BOS, IMAGE, build_mask, segments
from vocolab.data.batching import Batch
from vocolab.models.inputs import gather, model_device, prepare

SPLIT_MASKS = ("voco", "video")  # the masks under which image tokens see neither VoCo tokens nor text


def image_prefix(batch: Batch) -> torch.Tensor | None:
    """`[B, L]` original positions reordered: BOS and the image tokens first (in order), then the
    rest (VoCo tokens, text, padding; in order). None where the two passes do not apply: a sample
    without VoCo tokens or image tokens, or samples with different numbers of image tokens (one
    cache holds one prefix length)."""
    length = batch.input_ids.shape[1]
    if not all(layout.has_voco and layout.frames for layout in batch.layouts):
        return None
    kind = torch.stack([segments(layout, length)[0] for layout in batch.layouts])
    prefix = (kind == BOS) | (kind == IMAGE)
    if len(set(prefix.sum(1).tolist())) != 1:
        return None
    return torch.argsort((~prefix).to(torch.int8), dim=1, stable=True)


def split_forward(vlm, batch: Batch, mask: str, labels: torch.Tensor | None = None
                  ) -> tuple[CausalLMOutputWithPast, torch.Tensor | None]:
    """(output, index): the forward of `vlm` (a `VoCoVLM`) on `batch` under `mask` with the image
    tokens run without autograd, its logits (and loss on `labels`) at the positions `index`
    `[B, n]` only: the VoCo tokens, the text and the padding, in order. Where the two passes do not
    apply (`image_prefix` is None) it is the ordinary forward and `index` is None."""
    if mask not in SPLIT_MASKS:
        raise ValueError(f"split_forward: image tokens see later tokens under mask {mask!r}; one of {SPLIT_MASKS}")
    order = image_prefix(batch)
    if order is None:
        return vlm(batch.input_ids, batch.layouts, pixels=batch.pixels, features=batch.features, mask=mask,
                   labels=labels), None
    device = model_device(vlm)
    order = order.to(device)
    length = order.shape[1]
    split = int(sum(f.image.length for f in batch.layouts[0].frames)) + 1  # BOS + image tokens
    embeds = vlm.embed(batch.input_ids, pixels=batch.pixels, features=batch.features, layouts=batch.layouts,
                       image_grad=False)
    full = build_mask(batch.layouts, mask, length, device=device)[:, 0]
    reordered = gather(full, order).gather(2, order[:, None, :].expand(-1, length, -1))  # rows and columns
    first, rest = order[:, :split], order[:, split:]
    cache = DynamicCache(config=vlm.llm.config)
    with torch.no_grad():
        call = prepare(vlm, "split_forward", inputs_embeds=gather(embeds, first).detach(),
                       mask=reordered[:, None, :split, :split], past_key_values=cache, position_ids=first)
        vlm.llm.model(inputs_embeds=call.inputs_embeds, attention_mask=call.attention_mask,
                      position_ids=call.position_ids, past_key_values=cache, use_cache=True)
    out = vlm(inputs_embeds=gather(embeds, rest), mask=reordered[:, None, split:, :], past_key_values=cache,
              position_ids=rest, use_cache=True, labels=None if labels is None else gather(labels.to(device), rest))
    return out, rest


__all__ = ["SPLIT_MASKS", "image_prefix", "split_forward"]
