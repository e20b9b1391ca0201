"""QueCC: query-conditioned convolutional downsampling + local cross-attention.

From "Inference optimal VLMs need only one visual token but larger models" (Li et al.
2024). Why it is in the zoo: at K = 1..4 a compressor cannot keep "everything", so it has
to know what the question asks; QueCC adds the question's embedding to every patch before
downsampling, so the K tokens carry what *this* question needs. Its other two ideas:
keys/values are several CLIP layers fused (`vision_layers = (-2, -1)`, concatenated on
the channel axis by the caller), and each token attends only to the patches of its own
grid cell (local attention), which keeps spatial layout in the token order.

Steps: fuse layers with Linear(2 Dv, Dv); add Linear(D_llm, Dv)(query) to every patch; a
depthwise 3x3 Conv2d then the mean over each cell of the `pool_grid(K)` grid gives the K
query tokens; each attends (boolean mask) to the fused features of its own cell; residual,
MLP, LayerNorm. The convolution runs *inside each cell* (zero-padded at the cell border)
rather than over the whole grid: a whole-grid 3x3 kernel would leak the neighbouring cells'
patches into a token and break the locality the local attention is there to provide. (The
authors' code gets the same locality with kernel = stride = cell size.)
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from vocolab.zoo.pooling import check_features, grid_cells, grid_side, region_mask
from vocolab.zoo.qformer import attention, feed_forward
from vocolab.zoo.registry import Compressor, MethodInfo, register


def cell_groups(patches: int, k: int) -> list[tuple[tuple[int, int], list[int], torch.Tensor]]:
    """Cells grouped by shape: ((rows, cols), cell ids, patch index `[G, rows*cols]` row-major).

    Adaptive-pooling cells have at most a few distinct shapes, so each group runs through
    the convolution as one batch."""
    side = grid_side(patches)
    groups: dict[tuple[int, int], tuple[list[int], list[list[int]]]] = {}
    for i, (r0, r1, c0, c1) in enumerate(grid_cells(patches, k)):
        ids, index = groups.setdefault((r1 - r0, c1 - c0), ([], []))
        ids.append(i)
        index.append([r * side + c for r in range(r0, r1) for c in range(c0, c1)])
    return [(shape, ids, torch.tensor(index)) for shape, (ids, index) in groups.items()]


@register(MethodInfo("quecc", "pre", trainable=True, needs_query=True,
                     summary="question-conditioned conv downsampling + local cross-attention over 2 CLIP layers"))
class QueCC(Compressor):
    vision_layers = (-2, -1)

    def __init__(self, cfg, k: int):
        super().__init__(cfg, k)
        d = self.dim
        self.in_width = len(self.vision_layers) * d
        self.query_width = cfg.llm.hidden_size
        self.fuse = nn.Linear(self.in_width, d)
        self.query_proj = nn.Linear(self.query_width, d)
        self.conv = nn.Conv2d(d, d, kernel_size=3, padding=1, groups=d)
        self.norm_q, self.norm_kv, self.attn = nn.LayerNorm(d), nn.LayerNorm(d), attention(d, cfg.vision.heads)
        self.mlp = feed_forward(d)
        self.norm = nn.LayerNorm(d)
        self.groups = cell_groups(self.patches, k)
        order = torch.tensor([i for _, ids, _ in self.groups for i in ids])
        self.register_buffer("unsort", order.argsort(), persistent=False)
        # MultiheadAttention's boolean mask: True = may NOT attend (outside the token's cell)
        self.register_buffer("blocked", ~region_mask(self.patches, k), persistent=False)

    def downsample(self, x: torch.Tensor) -> torch.Tensor:
        """`[N, V, D]` -> `[N, K, D]`: depthwise conv inside each cell, then the cell mean."""
        parts = []
        for (rows, _), _, index in self.groups:
            crops = x[:, index.to(x.device)]  # [N, G, rows*cols, D]
            crops = rearrange(crops, "n g (h w) d -> (n g) d h w", h=rows)
            pooled = self.conv(crops).mean(dim=(2, 3))
            parts.append(rearrange(pooled, "(n g) d -> n g d", n=x.shape[0]))
        return torch.cat(parts, dim=1)[:, self.unsort]

    def forward(self, features, query=None, extras=None):
        name = self.info.name
        if isinstance(features, torch.Tensor) and features.dim() == 3 and features.shape[2] != self.in_width:
            raise ValueError(
                f"{name}: features have width {features.shape[2]}; expected {self.in_width} "
                f"(CLIP layers {self.vision_layers} x Dv={self.dim}, concatenated on the channel axis)")
        check_features(name, features, self.patches, self.in_width)
        if query is None:
            raise ValueError(f"{name}: query is required (mean LLM embedding of the question, [N, {self.query_width}])")
        if query.shape != (features.shape[0], self.query_width):
            raise ValueError(f"{name}: query must be [N={features.shape[0]}, {self.query_width}], "
                             f"got {tuple(query.shape)}")
        x = self.fuse(features)
        tokens = self.downsample(x + self.query_proj(query)[:, None])
        kv = self.norm_kv(x)
        tokens = tokens + self.attn(self.norm_q(tokens), kv, kv, attn_mask=self.blocked, need_weights=False)[0]
        return self.norm(tokens + self.mlp(tokens))


__all__ = ["QueCC", "cell_groups"]
