"""What a VideoLLM-MoD model does, checked once: the share `r` of each frame's vision
tokens a MoD layer computes (k = ceil(r V)), which layers route (`all`, `interleaved`,
`deep` or explicit indices), how tokens are selected (`learned`, `random`, `uniform`),
and the seed of the random selection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

LAYER_CHOICES = ("all", "interleaved", "deep")

SELECTIONS = ("learned", "random", "uniform")


def check_r(r) -> float:
    """`r` as a float in (0, 1]; ValueError otherwise."""
    if isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r) or not 0 < r <= 1:
        raise ValueError(f"MoD: r={r!r}; need a number with 0 < r <= 1 (share of each frame's vision "
                         f"tokens computed in a MoD layer)")
    return float(r)


def check_selection(selection) -> str:
    if selection not in SELECTIONS:
        raise ValueError(f"MoD: selection={selection!r} is not one of {SELECTIONS}")
    return selection


def mod_layer_indices(n_layers: int, layers: str | Sequence[int] = "interleaved") -> tuple[int, ...]:
    """The MoD layers of an `n_layers` stack: `all`, `interleaved` (1, 3, 5, ...), `deep`
    (the second half: n//2 .. n-1), or an explicit non-empty sequence of distinct indices."""
    if isinstance(layers, str):
        if layers == "all":
            out = tuple(range(n_layers))
        elif layers == "interleaved":
            out = tuple(range(1, n_layers, 2))
        elif layers == "deep":
            out = tuple(range(n_layers // 2, n_layers))
        else:
            raise ValueError(f"MoD: layers={layers!r} is not one of {LAYER_CHOICES} or a list of layer indices")
        if not out:
            raise ValueError(f"MoD: layers={layers!r} selects no layer of a {n_layers}-layer LLM")
        return out
    try:
        out = tuple(layers)
    except TypeError:
        raise ValueError(f"MoD: layers={layers!r} is not one of {LAYER_CHOICES} or a list of layer indices") from None
    if (not out or any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n_layers for i in out)
            or len(set(out)) != len(out)):
        raise ValueError(f"MoD: layers={layers!r}; need distinct layer indices in 0..{n_layers - 1}")
    return tuple(sorted(out))


def selected_per_frame(r: float, image_tokens: int) -> int:
    """k = ceil(r * V) (at least 1): vision tokens per frame computed in a MoD layer."""
    r = check_r(r)
    if image_tokens <= 0:
        raise ValueError(f"MoD: image_tokens={image_tokens}; need > 0")
    return max(1, min(image_tokens, math.ceil(r * image_tokens - 1e-9)))


@dataclass(frozen=True)
class MoDConfig:
    """What `MoDVLM` does: share `r` computed per frame, which `layers`, which `selection`,
    and the `seed` of the random selection."""

    r: float = 0.2
    layers: str | tuple[int, ...] = "interleaved"
    selection: str = "learned"
    seed: int = 0

    def __post_init__(self):
        check_r(self.r)
        check_selection(self.selection)
        if isinstance(self.layers, str):
            if self.layers not in LAYER_CHOICES:
                raise ValueError(f"MoD: layers={self.layers!r} is not one of {LAYER_CHOICES} "
                                 f"or a list of layer indices")
        else:
            try:
                layers = tuple(self.layers)
            except TypeError:
                raise ValueError(f"MoD: layers={self.layers!r} is not one of {LAYER_CHOICES} "
                                 f"or a list of layer indices") from None
            if not layers or any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in layers) \
                    or len(set(layers)) != len(layers):
                raise ValueError(f"MoD: layers={self.layers!r}; need distinct non-negative layer indices")
            object.__setattr__(self, "layers", layers)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"MoD: seed={self.seed!r} must be an int")

    def to_dict(self) -> dict:
        return {"r": self.r, "layers": self.layers if isinstance(self.layers, str) else list(self.layers),
                "selection": self.selection, "seed": self.seed}


def uniform_offsets(image_tokens: int, k: int) -> torch.Tensor:
    """k spatially even patch offsets in 0..V-1 (sorted): the centre patch of each of the k
    grid cells of `vocolab.zoo.pooling.grid_cells` when V is square and they fit (and are
    distinct), else the centres of k equal strides of the raster order."""
    from vocolab.zoo.pooling import grid_cells, grid_side

    try:
        side = grid_side(image_tokens)
        cells = grid_cells(image_tokens, k)
        centres = sorted({((r0 + r1) // 2) * side + (c0 + c1) // 2 for r0, r1, c0, c1 in cells})
        if len(centres) == k:
            return torch.tensor(centres, dtype=torch.long)
    except ValueError:
        pass
    return (torch.arange(k) * 2 + 1) * image_tokens // (2 * k)


__all__ = [
    "LAYER_CHOICES", "MoDConfig", "SELECTIONS", "check_r", "check_selection", "mod_layer_indices", "selected_per_frame",
    "uniform_offsets",
]
