"""Frame deltas for the video experiment (`tools/video_experiment.py --deltas`): a lever, not the package.

Every temporal question compares frames: which way an object moved, which one changed colour,
which entered first. The clip model sees each frame's patch features and must learn the
comparison across 256 tokens from five one-word answers per clip. Here each frame's patch
tokens also receive a learned projection of how that patch's CLIP features changed since the
previous frame (zero for frame 0), so a moving or recolouring object is marked where it is.
The projection starts at zero: at step 0 the model is the scene model it starts from.

Only teacher-forced scoring knows the deltas (`WithDeltas`); the package's streaming answerer
does not, so a `--deltas` run is scored by one teacher-forced forward per question (equal to
greedy exact match, `tests/test_temporal.py`).
"""

from __future__ import annotations

import torch
from torch import nn


class FrameDeltas(nn.Module):
    """`[T, V, Dv]` patch features -> `[T, V, D]`: a zero-initialised linear map of
    f_t - f_{t-1} (frame 0: zero)."""

    def __init__(self, vision_width: int, hidden: int):
        super().__init__()
        self.proj = nn.Linear(vision_width, hidden)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        delta = feats - torch.cat([feats[:1], feats[:-1]])
        return self.proj(delta)


def attach(vlm) -> FrameDeltas:
    """Give `vlm` (a VoCoVLM) a `frame_deltas` layer, on its device, if it has none."""
    if not hasattr(vlm, "frame_deltas"):
        param = next(vlm.parameters())
        vlm.frame_deltas = FrameDeltas(vlm.cfg.vision.hidden_size, vlm.cfg.llm.hidden_size).to(param.device)
    return vlm.frame_deltas


def embed_with_deltas(vlm, input_ids, layouts, pixels=None, features=None) -> torch.Tensor:
    """`vlm.embed` plus, at every image slot, the projected feature change of its patch (pixels are
    encoded once, here, and both read the features)."""
    if features is None:
        features = vlm.encode_images(torch.as_tensor(pixels).to(next(vlm.parameters()).device))
    embeds = vlm.embed(input_ids, features=features, layouts=layouts)
    features = torch.as_tensor(features).to(embeds.device, embeds.dtype)
    if features.dim() != 4:  # lone images: no change to mark
        return embeds
    rows = torch.cat([vlm.frame_deltas(f) for f in features]).reshape(-1, embeds.shape[-1])
    slots = (input_ids.to(embeds.device) == vlm.special.image).unsqueeze(-1)
    return embeds + torch.zeros_like(embeds).masked_scatter(slots, rows)


class WithDeltas(nn.Module):
    """A VoCoVLM called as one (input ids, layouts, pixels or features, mask, labels, position
    ids) whose image tokens carry the frame deltas."""

    def __init__(self, vlm):
        super().__init__()
        self.vlm = vlm
        attach(vlm)

    def forward(self, input_ids, layouts, pixels=None, features=None, mask="causal", labels=None,
                position_ids=None):
        embeds = embed_with_deltas(self.vlm, input_ids, layouts, pixels, features)
        return self.vlm(None, layouts, inputs_embeds=embeds, mask=mask, labels=labels, position_ids=position_ids)


def delta_module(cell, steps: int, tokenizer):
    """The study's clip-QA module (causal, `video-upper`) whose model gains `frame_deltas` once
    the initial weights are loaded (Lightning's `setup`, before the optimiser is built)."""
    from vocolab.training.modules import VLMModule

    class DeltaModule(VLMModule):
        def setup(self, stage: str) -> None:
            super().setup(stage)
            attach(self.model)

        def forward(self, batch, mask=None):
            return WithDeltas(self.model)(batch.input_ids, batch.layouts, pixels=batch.pixels,
                                          features=batch.features, mask=mask or self.mask, labels=batch.labels)

    return DeltaModule(cell, mask="causal", stage="video-upper", steps=max(1, steps), tokenizer=tokenizer)
