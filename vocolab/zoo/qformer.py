"""Q-Former: K learned queries read the patch features through cross-attention.

Why: BLIP-2's bridge is the standard *learned* compressor, the one VoCo-LLaMA is compared
against. Unlike pooling, each query can gather from anywhere in the image, and the
self-attention between queries lets them divide the image among themselves. This is a
miniature without BLIP-2's text branch or BERT initialisation: 2 pre-LayerNorm blocks of
[cross-attention queries -> patches, self-attention among queries, 4x MLP], width Dv.
"""

from __future__ import annotations

import torch
from torch import nn

from vocolab.zoo.pooling import check_features
from vocolab.zoo.registry import Compressor, MethodInfo, register

BLOCKS = 2
INIT_STD = 0.02


def feed_forward(dim: int, mult: int = 4) -> nn.Sequential:
    """Pre-LN MLP (LayerNorm, Linear, GELU, Linear) for a residual branch."""
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, mult * dim), nn.GELU(), nn.Linear(mult * dim, dim))


def attention(dim: int, heads: int) -> nn.MultiheadAttention:
    return nn.MultiheadAttention(dim, heads, batch_first=True)


class QFormerBlock(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm_q, self.norm_x, self.cross = nn.LayerNorm(dim), nn.LayerNorm(dim), attention(dim, heads)
        self.norm_s, self.self_attn = nn.LayerNorm(dim), attention(dim, heads)
        self.mlp = feed_forward(dim)

    def forward(self, q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        kv = self.norm_x(x)
        q = q + self.cross(self.norm_q(q), kv, kv, need_weights=False)[0]
        h = self.norm_s(q)
        q = q + self.self_attn(h, h, h, need_weights=False)[0]
        return q + self.mlp(q)


@register(MethodInfo("qformer", "pre", trainable=True,
                     summary="K learned queries, 2 blocks of cross-/self-attention (BLIP-2 Q-Former, mini)"))
class QFormer(Compressor):
    def __init__(self, cfg, k: int):
        super().__init__(cfg, k)
        self.queries = nn.Parameter(torch.randn(k, self.dim) * INIT_STD)
        self.blocks = nn.ModuleList(QFormerBlock(self.dim, cfg.vision.heads) for _ in range(BLOCKS))
        self.norm = nn.LayerNorm(self.dim)

    def forward(self, features, query=None, extras=None):
        check_features(self.info.name, features, self.patches, self.dim)
        q = self.queries.repeat(features.shape[0], 1, 1)  # a copy: a no_grad view of a parameter trips FlopCounterMode
        for block in self.blocks:
            q = block(q, features)
        return self.norm(q)


__all__ = ["QFormer", "QFormerBlock", "attention", "feed_forward"]
