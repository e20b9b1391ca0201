"""Average pooling + linear: VoCo-LLaMA's simplest baseline, and the patch-grid geometry
the other grid-based methods reuse.

Why a baseline this plain: it is the cheapest way to reach K tokens that keeps every
patch's information (each output token is the mean of one spatial cell), so any learned
compressor has to beat it to earn its parameters. The linear layer starts as the identity
with zero bias, so an untrained `avgpool` *is* plain pooling and fine-tuning only moves it
away from that where the data asks for it.

The grid helpers (`pool_grid`, `cell_bounds`, `grid_cells`, `region_mask`) describe the
h x w grid of K cells laid over the sqrt(V) x sqrt(V) patch grid exactly as
`F.adaptive_avg_pool2d` cuts it, so `uniform` dropping and QueCC's local attention agree
with the pooling about which patches belong to which token.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vocolab.zoo.registry import Compressor, MethodInfo, register


def pool_grid(k: int) -> tuple[int, int]:
    """The (h, w) cell grid for K tokens: h is the largest divisor of K with h <= sqrt(K),
    w = K // h (1 -> 1x1, 2 -> 1x2, 8 -> 2x4, 32 -> 4x8); cells are read row-major."""
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"pool_grid: k={k!r} must be a positive int")
    h = max(d for d in range(1, math.isqrt(k) + 1) if k % d == 0)
    return h, k // h


def cell_bounds(size: int, cells: int) -> list[tuple[int, int]]:
    """[start, end) of each of `cells` cells along an axis of `size` patches, as
    `adaptive_avg_pool` cuts it (cells may overlap by one when size % cells != 0)."""
    if not 1 <= cells <= size:
        raise ValueError(f"cell_bounds: cells={cells} must be between 1 and size={size}")
    return [(i * size // cells, -(-(i + 1) * size // cells)) for i in range(cells)]


def grid_side(patches: int) -> int:
    """sqrt(V) for a square patch grid."""
    side = math.isqrt(patches)
    if side * side != patches:
        raise ValueError(f"grid_side: patches={patches} is not a square number")
    return side


def grid_cells(patches: int, k: int) -> list[tuple[int, int, int, int]]:
    """(row_start, row_end, col_start, col_end) of each of the K cells, row-major."""
    side = grid_side(patches)
    h, w = pool_grid(k)
    if h > side or w > side:
        raise ValueError(f"grid_cells: a {h}x{w} grid for K={k} does not fit a {side}x{side} patch grid")
    rows, cols = cell_bounds(side, h), cell_bounds(side, w)
    return [(r0, r1, c0, c1) for r0, r1 in rows for c0, c1 in cols]


def region_mask(patches: int, k: int) -> torch.Tensor:
    """Bool `[K, V]`: True where patch v lies inside cell k."""
    side = grid_side(patches)
    mask = torch.zeros(k, side, side, dtype=torch.bool)
    for i, (r0, r1, c0, c1) in enumerate(grid_cells(patches, k)):
        mask[i, r0:r1, c0:c1] = True
    return rearrange(mask, "k h w -> k (h w)")


def check_features(name: str, features: torch.Tensor, patches: int, width: int) -> None:
    """ValueError unless `features` is `[N, V, width]`."""
    if not isinstance(features, torch.Tensor) or features.dim() != 3:
        raise ValueError(f"{name}: features must be a [N, V, C] tensor, got "
                         f"{getattr(features, 'shape', type(features).__name__)}")
    if features.shape[1] != patches or features.shape[2] != width:
        raise ValueError(f"{name}: features must be [N, {patches}, {width}] (V patches, width {width}), "
                         f"got {tuple(features.shape)}")


def grid_pool(features: torch.Tensor, k: int) -> torch.Tensor:
    """`[N, V, C]` -> `[N, K, C]`: adaptive average pooling to the `pool_grid(K)` grid, row-major."""
    side = grid_side(features.shape[1])
    grid = rearrange(features, "n (h w) c -> n c h w", h=side)
    pooled = F.adaptive_avg_pool2d(grid, pool_grid(k))
    return rearrange(pooled, "n c h w -> n (h w) c")


@register(MethodInfo("avgpool", "pre", trainable=True,
                     summary="adaptive average pooling of the patch grid to K cells, then a linear layer"))
class AvgPool(Compressor):
    def __init__(self, cfg, k: int):
        super().__init__(cfg, k)
        grid_cells(self.patches, k)  # fails early if the grid does not fit
        self.linear = nn.Linear(self.dim, self.dim)
        with torch.no_grad():
            self.linear.weight.copy_(torch.eye(self.dim))
            self.linear.bias.zero_()

    def forward(self, features, query=None, extras=None):
        check_features(self.info.name, features, self.patches, self.dim)
        return self.linear(grid_pool(features, self.k))


__all__ = ["AvgPool", "cell_bounds", "check_features", "grid_cells", "grid_pool", "grid_side",
           "pool_grid", "region_mask"]
