"""Perceiver Resampler: Flamingo's way of turning a variable number of patches into K tokens.

Why it differs from the Q-Former: the K latents attend to the patches *and to themselves*
in one attention (keys/values = concat(patches, latents)), and the patches carry learned
positional embeddings, so the resampler knows where a feature came from even though
attention itself is order-blind. 2 pre-LN layers of [attention, 4x MLP], final LayerNorm.
"""

from __future__ import annotations

import torch
from torch import nn

from vocolab.zoo.pooling import check_features
from vocolab.zoo.qformer import INIT_STD, attention, feed_forward
from vocolab.zoo.registry import Compressor, MethodInfo, register

LAYERS = 2


class PerceiverLayer(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm_x, self.norm_latents, self.attn = nn.LayerNorm(dim), nn.LayerNorm(dim), attention(dim, heads)
        self.mlp = feed_forward(dim)

    def forward(self, latents: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        q = self.norm_latents(latents)
        kv = torch.cat([self.norm_x(x), q], dim=1)
        latents = latents + self.attn(q, kv, kv, need_weights=False)[0]
        return latents + self.mlp(latents)


@register(MethodInfo("perceiver", "pre", trainable=True,
                     summary="K learned latents attend to patches+latents, 2 layers (Flamingo Perceiver Resampler)"))
class PerceiverResampler(Compressor):
    def __init__(self, cfg, k: int):
        super().__init__(cfg, k)
        self.positions = nn.Parameter(torch.randn(self.patches, self.dim) * INIT_STD)
        self.latents = nn.Parameter(torch.randn(k, self.dim) * INIT_STD)
        self.layers = nn.ModuleList(PerceiverLayer(self.dim, cfg.vision.heads) for _ in range(LAYERS))
        self.norm = nn.LayerNorm(self.dim)

    def forward(self, features, query=None, extras=None):
        check_features(self.info.name, features, self.patches, self.dim)
        x = features + self.positions
        latents = self.latents.repeat(features.shape[0], 1, 1)  # a copy, not a view (see qformer.py)
        for layer in self.layers:
            latents = layer(latents, x)
        return self.norm(latents)


__all__ = ["PerceiverLayer", "PerceiverResampler"]
