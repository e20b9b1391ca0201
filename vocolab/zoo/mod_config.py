"""VideoLLM-MoD (Wu et al. 2024, arXiv 2408.16730): mixture-of-depths for vision tokens.

Every vision token stays in the sequence, but in the chosen decoder layers ("MoD
layers") only the top `k = ceil(r * V)` vision tokens of each frame are computed; the
other `V - k` skip the layer unchanged (bit for bit) and write no K/V there. Text
(BOS, VoCo slots, question, answer, EOS) is always computed.

At a MoD layer, per sample and frame, the selected vision tokens are

* `learned`: the top k by a router score `s = router(h)` (`nn.Linear(d, 1)` per MoD
  layer, the only new parameters); the computed tokens get `h + w * (layer(h) - h)`
  with `w = sigmoid(s)`, so the router receives gradient through the gate (the
  top-k choice itself is not differentiable), as the paper's `x + mu * f(x)`;
* `random`: k random ones per frame (a seeded generator owned by the wrapper, so a
  run is reproducible from its seed; a new draw every forward), gate `w = 1`;
* `uniform`: k spatially even ones (the centre patch of each of k grid cells, the
  cells `avgpool`/`uniform` use, when they fit the patch grid; otherwise every
  (V/k)-th patch in raster order), gate `w = 1`.

The layer then runs on [every real non-vision token + the selected vision tokens]
only, with their ORIGINAL position ids (RoPE unchanged) and the causal mask
restricted to those rows and columns, like `vocolab.zoo.fastv` (padding is dropped
and each sample re-packed); so a skipped token writes no K/V in that layer and
nothing attends to it there. Layer choice: `all`, `interleaved` (layers 1, 3, 5, ...,
the paper's best trade-off), `deep` (the second half), or explicit indices.

Costs (`mod_flops`, `kv_tokens_per_layer`): a MoD layer costs a plain layer at
`n_hat = n - frames * (V - k)` tokens (projections, MLP, attention n_hat x n_hat),
plus the router (`2 n d` FLOPs, scored at every position for simplicity, learned
only); the LM head runs at every position. `mod_flops(..., training=True)` gives
forward + backward as torch's `FlopCounterMode` counts them (linear layers 3x
forward: dX and dW; fused SDPA attention 3.5x: forward QK^T + AV, backward recomputes
QK^T plus four products), which `measured_training_flops` measures.

Caveats: only the causal (upper-bound) mask is supported (mask "voco"/"video" would
need the same restriction of a different mask; not wired up); no incremental
decoding with a cache (each MoD layer holds a different key set per layer, so
`use_cache=True` returns the per-layer cache only for inspection and sizing);
`greedy_generate` works (it reruns the whole sequence each step).

TODO-DOC (from mod)
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


__all__ = ["LAYER_CHOICES", "MoDConfig", "SELECTIONS", "check_r", "check_selection", "mod_layer_indices", "selected_per_frame", "uniform_offsets"]
