"""Frame deltas: each image token of a clip's frame t also carries how its features changed since frame t - 1.

Every temporal question compares frames: which way an object moved, which one changed colour,
which entered first. Frame embeddings (`VoCoVLM.frame_positions`) tell the LLM *when* a token
was seen, but the comparison itself it had to learn across T x V tokens from five one-word
answers per clip, and on nano it did not (direction at chance). A learned linear map of each
token's feature change marks a moving or recolouring object where it is. On validation clips
it lifted the video upper bound from 0.455 / 0.425 to 0.551 / 0.569 at two clip seeds,
direction from 0.30-0.33 to 0.88, at no extra step time (RESULTS.md, "Frame deltas").

The map is zero at the start and is built without drawing random numbers, so a model starts
as the scene model it is loaded from, and a scene model's initialisation and training are what
they were without it. Frame 0 and lone images have no change: an image model never uses it.

Which features: those the projector reads. All V patches (no compressor); a token drop's K
kept patches compare with the same patches of the frame before (the change of all V, gathered);
the K tokens of any other compressor (pooling, learned queries) with the frame before's K tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vocolab.models.inputs import gather


class FrameDeltas(nn.Module):
    """A zero-initialised linear map `Dv -> D` (no bias: no change, no term) of f_t - f_{t-1}."""

    def __init__(self, vision_width: int, hidden: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(hidden, vision_width))

    def forward(self, feats: list[torch.Tensor], kept: torch.Tensor | None = None) -> torch.Tensor:
        """`[sum T, n, D]` for each entry `[T, N, Dv]` of `feats` (a sample's frames, in order),
        frame 0 of each entry zero; with `kept` (`[sum T, K]`, a token drop's patches) only those rows."""
        feats = [f.to(self.weight) for f in feats]  # where the model is, whatever device the features came from
        changes = torch.cat([f - torch.cat([f[:1], f[:-1]]) for f in feats])
        if kept is not None:
            changes = gather(changes, kept.to(changes.device))
        return F.linear(changes, self.weight)


__all__ = ["FrameDeltas"]
