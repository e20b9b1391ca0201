"""Every attention mask vocolab uses, derived from layouts by pure functions.

`build_mask` returns a bool tensor `[B, 1, L, L]` (True = may attend). The model
never sees that tensor directly: `for_backend` converts it into what the chosen
attention implementation actually honours, because the backends disagree:

* SDPA honours a bool mask (so does `sdpa_frames`, SDPA over the `video` mask's blocks only:
  `models.frame_attention`);
* eager *adds* the mask to the scores, so a bool mask would add 0/1 and mask
  nothing: it gets an additive float mask (0 / dtype min) instead;
* FlexAttention needs a `BlockMask`;
* anything else (e.g. flash-attention) ignores custom masks and is refused.

Mask modes (query i, key j, both real tokens, j <= i):

* `causal`: plain causal attention (VoCo tokens present but not enforced);
* `voco`:   tokens after the last VoCo token (question, answer) see only the VoCo
            tokens and later text: not BOS, not the image (paper Eq. 3 plus the
            official code's hiding of BOS, so the VoCo tokens are the attention sink);
* `video`:  frame t's image and VoCo tokens see BOS and frame t only (BOS is a
            shared attention sink whose K/V is identical for every frame, which is
            what makes per-frame streaming compression exact); text sees every
            frame's VoCo tokens and later text, as in `voco`.

A sample without VoCo tokens gets a plain causal mask in every mode. Padding
queries attend to themselves only, so no row is fully masked and SDPA never
produces NaN; real queries never see padding.
"""

from __future__ import annotations

from typing import Sequence

import torch

from vocolab.core.config import MASK_MODES, check_backend
from vocolab.core.layout import Layout

# segment kinds per position
BOS, IMAGE, VOCO, TEXT, PAD = range(5)


def segments(layout: Layout, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position segment kind and frame index (-1 outside frames) for one sample."""
    if layout.length > length:
        raise ValueError(f"mask: sample of {layout.length} tokens does not fit in length {length}")
    kind = torch.full((length,), PAD, dtype=torch.long)
    frame = torch.full((length,), -1, dtype=torch.long)
    kind[: layout.length] = TEXT
    kind[0] = BOS
    for t, f in enumerate(layout.frames):
        kind[f.image.start : f.image.stop] = IMAGE
        kind[f.voco.start : f.voco.stop] = VOCO
        frame[f.image.start : f.voco.stop] = t
    return kind, frame


def mask_from_segments(kind: torch.Tensor, frame: torch.Tensor, has_voco: torch.Tensor, mode: str) -> torch.Tensor:
    """The bool masks `[B, L, L]` of samples given by their segments (`kind`, `frame` `[B, L]`,
    `has_voco` `[B]`): vectorised, on whatever device the segments are, so a batch's mask is
    built where the model runs instead of being copied there."""
    if mode not in MASK_MODES:
        raise ValueError(f"mask mode {mode!r} is not one of {MASK_MODES}")
    length = kind.shape[-1]
    position = torch.arange(length, device=kind.device)
    real = kind != PAD
    allowed = (position[None, :] <= position[:, None]) & real[:, None, :] & real[:, :, None]
    if mode != "causal":
        text_q = (kind == TEXT)[:, :, None]
        text_sees = ((kind == VOCO) | (kind == TEXT))[:, None, :]
        rule = ~text_q | text_sees
        if mode == "video":
            in_frame_q = (frame >= 0)[:, :, None]
            frame_sees = (frame[:, :, None] == frame[:, None, :]) | (kind == BOS)[:, None, :]
            rule &= ~in_frame_q | frame_sees
        allowed &= rule | ~has_voco[:, None, None]  # a sample without VoCo tokens stays causal
    return allowed | torch.diag_embed(~real)  # padding rows see themselves: never a fully masked row


def sample_mask(layout: Layout, mode: str, length: int | None = None) -> torch.Tensor:
    """The `[L, L]` bool mask of one sample (True = query row may attend to key column)."""
    length = layout.length if length is None else length
    kind, frame = segments(layout, length)
    return mask_from_segments(kind[None], frame[None], torch.tensor([layout.has_voco]), mode)[0]


def build_mask(layouts: Sequence[Layout], mode: str, length: int | None = None,
               device: torch.device | str | None = None) -> torch.Tensor:
    """Bool mask `[B, 1, L, L]` for a right-padded batch (L = longest sample by default),
    built on `device` from the layouts' segments (only those `[B, L]` ids cross from the host)."""
    length = max(l.length for l in layouts) if length is None else length
    kind, frame = (torch.stack(parts) for parts in zip(*(segments(l, length) for l in layouts)))
    has_voco = torch.tensor([l.has_voco for l in layouts])
    kind, frame, has_voco = (t.to(device) for t in (kind, frame, has_voco)) if device is not None else (
        kind, frame, has_voco)
    return mask_from_segments(kind, frame, has_voco, mode).unsqueeze(1)


def to_additive(mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Additive float mask for eager attention: 0 where allowed, dtype min where blocked."""
    if mask.dtype != torch.bool:
        raise TypeError(f"to_additive expects a bool mask, got {mask.dtype}")
    out = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return out.masked_fill(~mask, torch.finfo(dtype).min)


def to_block_mask(mask: torch.Tensor, block_size: int = 128):
    """FlexAttention `BlockMask` equivalent to a `[B, 1, L, L]` bool mask."""
    from torch.nn.attention.flex_attention import create_block_mask

    if mask.dtype != torch.bool or mask.dim() != 4:
        raise TypeError("to_block_mask expects a bool mask of shape [B, 1, Q, K]")
    dense = mask[:, 0].contiguous()

    def mask_mod(b, h, q_idx, kv_idx):
        return dense[b, q_idx, kv_idx]

    batch, _, q_len, kv_len = mask.shape
    return create_block_mask(mask_mod, batch, None, q_len, kv_len, device=mask.device,
                             BLOCK_SIZE=block_size)


def for_backend(mask: torch.Tensor, backend: str, dtype: torch.dtype = torch.float32):
    """Convert a bool mask to the form `backend` honours; refuse backends that ignore it."""
    if backend in ("sdpa", "sdpa_frames"):
        return mask
    if backend == "eager":
        return to_additive(mask, dtype)
    check_backend(backend)
    return to_block_mask(mask)


__all__ = ["BOS", "IMAGE", "PAD", "TEXT", "VOCO", "build_mask", "for_backend", "mask_from_segments", "sample_mask",
           "segments", "to_additive", "to_block_mask"]
