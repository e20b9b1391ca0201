"""What every forward of a VoCoVLM prepares for the LLM's decoder layers: the embedded
inputs, the input checks, the bool mask built from the layouts and its form for the
attention backend, the position ids and (for wrappers) the RoPE.

`VoCoVLM.forward` calls `prepare` and hands the result to the `transformers` LLM; FastV
(`zoo.fastv`) and MoD (`zoo.mod`) run the decoder layers one by one, some of them on a
chosen subset of the tokens only, each at its ORIGINAL position: `Prepared.subset` gives a
layer's arguments restricted to those tokens and `gather` picks their hidden states.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from vocolab.core.config import check_backend
from vocolab.core.layout import position_ids as layout_position_ids
from vocolab.core.masks import build_mask, for_backend
from vocolab.models.frame_attention import NAME as SDPA_FRAMES
from vocolab.models.frame_attention import FrameBlocks, frame_blocks


class Prepared(NamedTuple):
    """A VoCoVLM call made ready for the LLM's decoder layers (all on the inputs' device).

    `inputs_embeds` `[B, L, D]`; `bool_mask` `[B, 1, L, past + L]` (True = may attend);
    `attention_mask`: `bool_mask` in the form `backend` reads; `position_ids` `[B, L]`;
    `rope`: the LLM's RoPE (cos, sin) `[B, L, head_dim]` at those positions (None unless
    `prepare` was asked for it); `backend`: the attention backend the mask was converted for;
    `frame_blocks`: for the `sdpa_frames` backend under the `video` mask, where that mask is non-empty
    (`models.frame_attention`; None: the backend runs on the whole mask).
    """

    inputs_embeds: torch.Tensor
    bool_mask: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    rope: tuple[torch.Tensor, torch.Tensor] | None
    backend: str
    frame_blocks: FrameBlocks | None = None

    def layer_kwargs(self) -> dict:
        """What each decoder layer is called with besides the hidden states (every token)."""
        return dict(attention_mask=self.attention_mask, position_ids=self.position_ids,
                    position_embeddings=self.rope)

    def subset(self, index: torch.Tensor, valid: torch.Tensor) -> dict:
        """`layer_kwargs` for the tokens at `index` `[B, n]` (each sample's original
        positions) only: the mask restricted to their rows and columns, their original
        position ids and RoPE. Slots with `valid` `[B, n]` False are filler: they attend
        to themselves only and nothing attends to them. Needs a cache-free call."""
        rows = gather(self.bool_mask[:, 0], index)  # [B, n, L]
        sub = rows.gather(2, index[:, None, :].expand(-1, index.shape[1], -1))
        sub = (sub & valid[:, :, None] & valid[:, None, :]) | torch.diag_embed(~valid)
        return dict(attention_mask=for_backend(sub[:, None], self.backend, self.inputs_embeds.dtype),
                    position_ids=gather(self.position_ids, index),
                    position_embeddings=tuple(gather(x, index) for x in self.rope))


def model_device(model: torch.nn.Module) -> torch.device:
    """The device a model's weights live on: where its inputs are moved (`prepare` does it
    for every forward)."""
    return next(model.parameters()).device


def gather(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """`x[b, index[b]]` for every sample b: `[B, L, ...]` -> `[B, n, ...]` (index `[B, n]`)."""
    return x.gather(1, index.view(*index.shape, *(1,) * (x.dim() - 2)).expand(*index.shape, *x.shape[2:]))


def prepare(vlm, who: str, input_ids: torch.Tensor | None = None, layouts=None, pixels=None, features=None,
            inputs_embeds: torch.Tensor | None = None, mask: str | torch.Tensor = "causal",
            past_key_values=None, position_ids: torch.Tensor | None = None, rope: bool = False) -> Prepared:
    """Check and prepare a call of `vlm` (a `VoCoVLM`) with `VoCoVLM.forward`'s arguments
    (see there); `who` prefixes the error messages. With `rope` also the RoPE (cos, sin)."""
    backend = check_backend(vlm.attn_implementation, who)
    if inputs_embeds is None:
        if input_ids is None:
            raise ValueError(f"{who}: give input_ids or inputs_embeds")
        inputs_embeds = vlm.embed(input_ids, pixels=pixels, features=features, layouts=layouts)
    elif pixels is not None or features is not None:
        raise ValueError(f"{who}: pixels/features are ignored when inputs_embeds is given")
    batch, length = inputs_embeds.shape[:2]
    device = inputs_embeds.device
    if backend == "flex_attention" and device.type == "cpu":
        raise ValueError(f"{who}: flex_attention needs a GPU here (no CPU backward, and its CPU path "
                         f"crashes on custom masks); use 'sdpa' or 'eager' on CPU")
    past = past_key_values.get_seq_length() if past_key_values is not None else 0
    if past and (isinstance(mask, str) or position_ids is None):
        raise ValueError(f"{who}: with a non-empty cache pass a prebuilt bool mask "
                         f"[B, 1, Q, past + Q] and explicit position_ids")
    bool_mask = _bool_mask(who, mask, layouts, batch, length, past, device).to(device)
    if position_ids is None:
        position_ids = layout_position_ids(batch, length, device)
    position_ids = position_ids.to(device)
    return Prepared(
        inputs_embeds=inputs_embeds,
        bool_mask=bool_mask,
        attention_mask=for_backend(bool_mask, backend, inputs_embeds.dtype),
        position_ids=position_ids,
        rope=vlm.llm.model.rotary_emb(inputs_embeds, position_ids) if rope else None,
        backend=backend,
        frame_blocks=frame_blocks(bool_mask, layouts) if backend == SDPA_FRAMES and isinstance(mask, str)
        and mask == "video" and not past else None,
    )


def _bool_mask(who: str, mask, layouts, batch: int, length: int, past: int, device) -> torch.Tensor:
    if isinstance(mask, str):
        if layouts is None or len(layouts) != batch:
            raise ValueError(f"{who}: mask mode {mask!r} needs one layout per sample ({batch})")
        return build_mask(layouts, mask, length, device=device)
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise ValueError(f"{who}: mask must be a mode string or a bool tensor (True = may attend); "
                         "the model converts it for the backend itself")
    expected = (batch, 1, length, past + length)
    if tuple(mask.shape) != expected:
        raise ValueError(f"{who}: mask has shape {tuple(mask.shape)}, expected {expected}")
    return mask


def passthrough(name: str, doc: str | None = None) -> property:
    """A read-only property returning the wrapped VoCoVLM's (`self.vlm`) attribute `name`,
    so that a wrapper is treated like the VoCoVLM it wraps."""
    return property(lambda self: getattr(self.vlm, name), doc=doc)


__all__ = ["model_device", "Prepared", "gather", "passthrough", "prepare"]
