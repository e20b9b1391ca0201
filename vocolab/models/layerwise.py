"""A trained `VoCoVLM` whose decoder layers a wrapper runs one by one: the common ground
of FastV (`zoo.fastv`) and VideoLLM-MoD (`zoo.mod`).

Both run the causal (upper-bound) model, some layers on a chosen subset of the tokens
only, so both refuse what running the layers by hand cannot do (another mask, decoding
against a non-empty KV cache), prepare the inputs exactly as `VoCoVLM.forward` does
(`models.inputs.prepare`, with the RoPE) and look like the VoCoVLM they wrap to training,
decoding and evaluation. A subclass implements `run`.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from transformers.modeling_outputs import CausalLMOutputWithPast

from vocolab.core.layout import Layout
from vocolab.models.inputs import Prepared, passthrough, prepare


class LayerwiseVLM(nn.Module):
    """Wraps `vlm` (a `VoCoVLM`); call it like `VoCoVLM.forward` with `mask="causal"`."""

    #: why a non-empty KV cache is refused (the subclass's reason)
    cache_reason = "the layers run by hand"

    def __init__(self, vlm):
        super().__init__()
        self.vlm = vlm

    cfg = passthrough("cfg")
    special = passthrough("special")
    vocab_size = passthrough("vocab_size")
    image_slots = passthrough("image_slots")
    vision = passthrough("vision")
    vision_layers = passthrough("vision_layers")
    llm = passthrough("llm")
    projector = passthrough("projector")
    frame_positions = passthrough("frame_positions")
    frame_deltas = passthrough("frame_deltas")
    attn_implementation = passthrough("attn_implementation")

    def encode_images(self, pixels) -> torch.Tensor:
        return self.vlm.encode_images(pixels)

    def embed(self, input_ids, pixels=None, features=None, layouts=None) -> torch.Tensor:
        return self.vlm.embed(input_ids, pixels=pixels, features=features, layouts=layouts)

    def load_backbone(self, state: dict) -> None:
        """Load a plain model's weights (e.g. the upper bound) into the wrapped VLM."""
        self.vlm.load_backbone(state)

    def forward(self, input_ids: torch.Tensor | None = None, layouts: Sequence[Layout] | None = None, pixels=None,
                features=None, mask: str = "causal", labels: torch.Tensor | None = None,
                inputs_embeds: torch.Tensor | None = None, past_key_values=None,
                use_cache: bool = False) -> CausalLMOutputWithPast:
        who = type(self).__name__
        if not isinstance(mask, str) or mask != "causal":
            what = repr(mask) if isinstance(mask, str) else f"a prebuilt {type(mask).__name__}"
            raise ValueError(f"{who}: mask {what} is not supported; it runs the causal (upper-bound) model, "
                             f"use mask='causal'")
        if past_key_values is not None and past_key_values.get_seq_length() > 0:
            raise ValueError(f"{who}: a non-empty KV cache is not supported ({self.cache_reason}; decode by "
                             f"rerunning the sequence)")
        call = prepare(self.vlm, who, input_ids=input_ids, layouts=layouts, pixels=pixels, features=features,
                       inputs_embeds=inputs_embeds, mask="causal", rope=True)
        return self.run(call, layouts, labels, use_cache)

    def run(self, call: Prepared, layouts: Sequence[Layout], labels: torch.Tensor | None,
            use_cache: bool) -> CausalLMOutputWithPast:
        raise NotImplementedError


__all__ = ["LayerwiseVLM"]
