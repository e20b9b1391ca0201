"""Token dropping without looking: keep K of the V patch features unchanged.

Why: these are the floors any selection method must clear. `uniform` keeps a spatially
even subset (the centre patch of each cell of the `pool_grid(K)` grid, the same cells
`avgpool` averages), `random` keeps K random patches per image. Neither has parameters
nor reads the image, so a method that *chooses* tokens (PruMerge, FastV) shows its worth
only by beating them. Kept patches stay in their original (raster) order, and
`choose` says which they are, so a model with per-patch image positions gives each kept
patch its own position (without it the upper bound's drops lose "where" as well as "what").
"""

from __future__ import annotations

import torch

from vocolab.zoo.pooling import check_features, grid_cells, grid_side
from vocolab.zoo.registry import Compressor, MethodInfo, register


def gather_patches(features: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """`features[n, index[n, j]]` for `[N, V, C]` features and `[N, K]` (or `[K]`) indices."""
    if index.dim() == 1:
        index = index.expand(features.shape[0], -1)
    return torch.take_along_dim(features, index.to(features.device)[..., None], dim=1)


class PatchDrop(Compressor):
    """A drop keeps K of the patches unchanged: `choose` says which, `keep` returns them with
    their indices (the VLM gives each its patch's position), `forward` only the features."""

    def choose(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def keep(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(`[N, K, C]` kept features, `[N, K]` their patch indices)."""
        index = self.choose(features).to(features.device).expand(features.shape[0], -1)
        return gather_patches(features, index), index

    def forward(self, features, query=None, extras=None):
        return self.keep(features)[0]


@register(MethodInfo("uniform", "pre", trainable=False, keeps_patches=True,
                     summary="keep the centre patch of each of K grid cells (spatially even)"))
class UniformDrop(PatchDrop):
    def __init__(self, cfg, k: int):
        super().__init__(cfg, k)
        side = grid_side(self.patches)
        centres = [((r0 + r1) // 2) * side + (c0 + c1) // 2 for r0, r1, c0, c1 in grid_cells(self.patches, k)]
        self.register_buffer("index", torch.tensor(sorted(centres)), persistent=False)

    def choose(self, features: torch.Tensor) -> torch.Tensor:
        """`[K]`: the kept patches, the same for every image."""
        check_features(self.info.name, features, self.patches, self.dim)
        return self.index


@register(MethodInfo("random", "pre", trainable=False, keeps_patches=True,
                     summary="keep K random patches per image (seeded, reproducible)"))
class RandomDrop(PatchDrop):
    seed = 0

    def __init__(self, cfg, k: int):
        super().__init__(cfg, k)
        self.generator = torch.Generator().manual_seed(self.seed)

    def choose(self, features: torch.Tensor) -> torch.Tensor:
        """`[N, K]`: each image's kept patches (each call draws anew from the seeded generator)."""
        check_features(self.info.name, features, self.patches, self.dim)
        scores = torch.rand(features.shape[0], self.patches, generator=self.generator)
        return scores.argsort(dim=1)[:, : self.k].sort(dim=1).values


__all__ = ["PatchDrop", "RandomDrop", "UniformDrop", "gather_patches"]
