"""`sdpa_frames`: SDPA that computes only the blocks the `video` mask leaves open.

Under the `video` mask (`core.masks`) frame t's image and VoCo tokens see BOS and frame t only, and the text sees
the VoCo tokens and the text. Over a nano clip (BOS, 4 frames of 64 patches + 2 VoCo tokens, ~100 text tokens: 372
in all) about 89% of the score matrix is masked out (the blocks below cover 22% of it), yet dense SDPA computes all
of it, forward and backward: attention was 22% of a temporal training step on the CPU (RESULTS.md, "Temporal
tuning"). Here each frame attends as its own short sequence (BOS + the frame), the text rows only over the VoCo and
text keys, and BOS over itself: the same outputs and gradients (to float rounding; `tests/test_frame_attention.py`)
at a fraction of the attention work.

It is an attention backend registered with `transformers`' public `AttentionInterface` under `NAME`, chosen like
any other through `llm.attn_implementation`. The block structure (`FrameBlocks`) is worked out once per forward
in `models.inputs.prepare` and reaches every layer as a keyword argument; a call without it (another mask mode,
a KV cache, frames that differ across the batch, the layer-by-layer wrappers of `zoo`) runs plain SDPA on the
whole mask, so the backend is always correct and only sometimes faster.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

from vocolab.core.layout import Layout

NAME = "sdpa_frames"


class FrameBlocks(NamedTuple):
    """Where a batch's `video` mask is non-empty: `frames` frames of `span` tokens each (image, then `voco`
    VoCo tokens) from position 1; `frame_mask` `[B * frames, 1, span, 1 + span]` (each frame's rows over BOS +
    the frame's keys), `text_keys` `[n]` (the VoCo and text positions) and `text_mask` `[B, 1, L - prefix, n]`
    (the text rows over them), all sliced from the bool mask itself."""

    frames: int
    span: int
    voco: int
    frame_mask: torch.Tensor
    text_keys: torch.Tensor
    text_mask: torch.Tensor

    @property
    def prefix(self) -> int:
        """BOS and every frame: the first text position."""
        return 1 + self.frames * self.span


def shared_frames(layouts: Sequence[Layout]) -> tuple[int, int] | None:
    """(frames, span) when every sample has the same frames, each image then its VoCo tokens, back to back from
    position 1, and the text right after them; else None (the mask has no common block structure)."""
    first = layouts[0].frames if layouts else ()
    if not first or first[0].voco.length == 0 or any(layout.frames != first for layout in layouts):
        return None
    span = first[0].image.length + first[0].voco.length
    for t, frame in enumerate(first):
        if (frame.image.start != 1 + t * span or frame.voco.start != frame.image.stop
                or frame.voco.stop - frame.image.start != span):
            return None
    prefix = 1 + len(first) * span
    if any(layout.text.start != prefix for layout in layouts):
        return None
    return len(first), span


def frame_blocks(mask: torch.Tensor, layouts: Sequence[Layout]) -> FrameBlocks | None:
    """The blocks of a bool mask `[B, 1, L, L]` built for `layouts` (None where `shared_frames` finds no common
    structure or the mask lets a query see past its block, so the caller falls back to the whole mask)."""
    shape = shared_frames(layouts)
    if shape is None:
        return None
    frames, span = shape
    batch, length = mask.shape[0], mask.shape[-1]
    prefix = 1 + frames * span
    if mask.dim() != 4 or mask.shape[-2] != length or length < prefix:
        return None
    device = mask.device
    starts = 1 + span * torch.arange(frames, device=device)
    frame_cols = torch.cat([torch.zeros(frames, 1, dtype=torch.long, device=device),
                            starts[:, None] + torch.arange(span, device=device)], 1)  # [frames, 1 + span]
    voco = torch.cat([torch.arange(f.voco.start, f.voco.stop) for f in layouts[0].frames]).to(device)
    text_keys = torch.cat([voco, torch.arange(prefix, length, device=device)])
    covered = torch.zeros(length, length, dtype=torch.bool, device=device)
    covered[0, 0] = True
    rows = starts[:, None] + torch.arange(span, device=device)  # [frames, span]
    covered[rows[:, :, None], frame_cols[:, None, :]] = True
    covered[prefix:, text_keys] = True
    if (mask[:, 0] & ~covered).any():
        return None
    grid = mask[:, 0, 1:prefix, :prefix].reshape(batch, frames, span, prefix)
    frame_mask = grid.gather(3, frame_cols[None, :, None, :].expand(batch, frames, span, 1 + span))
    return FrameBlocks(frames=frames, span=span, voco=layouts[0].voco_tokens,
                       frame_mask=rearrange(frame_mask, "b n s k -> (b n) 1 s k"), text_keys=text_keys,
                       text_mask=mask[:, :, prefix:][..., text_keys])


def frame_block_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                          attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                          frame_blocks: FrameBlocks | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """`transformers`' attention-function signature: `query` `[B, H, L, d]`, `key`/`value` `[B, H_kv, L, d]`
    -> (`[B, L, H, d]`, None), as `sdpa_attention_forward` returns; without `frame_blocks`, exactly that."""
    if frame_blocks is None or query.shape[2] != key.shape[2]:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    groups = query.shape[1] // key.shape[1]
    if groups > 1:
        key, value = (x.repeat_interleave(groups, dim=1) for x in (key, value))
    frames, prefix = frame_blocks.frames, frame_blocks.prefix

    def attend(q, k, v, mask):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=scaling)

    def per_frame(x):  # [B, H, L, d] -> [(B frames), H, 1 + span, d]: BOS, then the frame's tokens
        own = rearrange(x[:, :, 1:prefix], "b h (n s) d -> (b n) h s d", n=frames)
        return torch.cat([repeat(x[:, :, :1], "b h o d -> (b n) h o d", n=frames), own], 2)

    q_frames = rearrange(query[:, :, 1:prefix], "b h (n s) d -> (b n) h s d", n=frames)
    out_frames = attend(q_frames, per_frame(key), per_frame(value), frame_blocks.frame_mask)
    def text_keys(x):  # [B, H, L, d] -> [B, H, n, d]: every frame's VoCo tokens, then the text (slices: an
        # indexed gather's backward, an accumulating index_put, cost a third of the attention it saves)
        frame_tokens = rearrange(x[:, :, 1:prefix], "b h (n s) d -> b h n s d", n=frames)
        voco = rearrange(frame_tokens[:, :, :, frame_blocks.span - frame_blocks.voco:], "b h n k d -> b h (n k) d")
        return torch.cat([voco, x[:, :, prefix:]], 2)

    out = torch.cat([attend(query[:, :, :1], key[:, :, :1], value[:, :, :1], None),
                     rearrange(out_frames, "(b n) h s d -> b h (n s) d", n=frames),
                     attend(query[:, :, prefix:], text_keys(key), text_keys(value), frame_blocks.text_mask)], 2)
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(NAME, frame_block_attention)
AttentionMaskInterface.register(NAME, sdpa_mask)  # any mask transformers builds itself: SDPA's (bool) form

__all__ = ["NAME", "FrameBlocks", "frame_block_attention", "frame_blocks", "shared_frames"]
