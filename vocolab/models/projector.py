"""The vision-to-language projector: LLaVA-1.5's `mlp2x_gelu`.

Two linear layers with a GELU between them map each CLIP patch feature (width Dv)
into the LLM's embedding space (width D). It is the only new module between the
two pretrained towers, and the one the `pretrain` stage aligns first.

With `positions = V` it also adds a learned embedding per patch position to each image's V
projected tokens, starting at zero or at `start` (`sincos_2d`: a code the LLM can read a row or
a column off from the first step, which took nano's slowest seed off its plateau ~700 steps
sooner; `llm.image_positions_init`). The LLM's rotary positions
only rotate queries and keys, so whatever a text token gathers from the image
(the values) says *what* is there, and *where* only as far as CLIP's own position
embeddings survive in the patch features. The added embedding puts "where" into the
values explicitly: at nano it is what lifts the two-object `spatial` questions off
chance (`llm.image_positions`, on by default; RESULTS.md). A method that keeps only
some of the patches says which: the token drops pass each image's kept patches to
`forward(x, index)`, PruMerge on the upper bound sets them with `placed_at`.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from einops import repeat
from torch import nn


class Projector(nn.Module):
    """`[..., in_dim] -> [..., out_dim]` via Linear -> GELU -> Linear; with `positions`
    > 0 the input is `[..., positions, in_dim]` and a learned per-position embedding
    is added to the output."""

    def __init__(self, in_dim: int, out_dim: int, positions: int = 0, start: torch.Tensor | None = None):
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.fc1 = nn.Linear(in_dim, out_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(out_dim, out_dim)
        if start is not None and tuple(start.shape) != (positions, out_dim):
            raise ValueError(f"Projector: start positions {tuple(start.shape)}, expected ({positions}, {out_dim})")
        self.positions = None
        if positions:
            self.positions = nn.Parameter(torch.zeros(positions, out_dim) if start is None else start.clone().float())
        self.patch_index = None  # set by `placed_at`

    @contextmanager
    def placed_at(self, index: torch.Tensor):
        """Within the block, inputs `[..., K, in_dim]` are K of an image's patches, the ones
        at `index` (`[K]`, the same for every image, or `[N, K]`), and get those patches' positions."""
        self.patch_index = index
        try:
            yield self
        finally:
            self.patch_index = None

    def forward(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """`index`: which patches the inputs are (`[K]` or `[N, K]` for inputs `[N, K, in_dim]`);
        default all V in order, or the ones set by `placed_at`."""
        y = self.fc2(self.act(self.fc1(x)))
        if self.positions is None:
            return y
        index = self.patch_index if index is None else index
        if index is not None:
            if x.dim() < 2 or index.dim() not in (1, 2) or x.shape[-2] != index.shape[-1] or (
                    index.dim() == 2 and tuple(x.shape[:-1]) != tuple(index.shape)):
                raise ValueError(f"Projector: patch index {tuple(index.shape)} does not match "
                                 f"inputs {tuple(x.shape)}")
            return y + self.positions[index.to(self.positions.device)].to(y.dtype)
        if x.dim() < 2 or x.shape[-2] != self.positions.shape[0]:
            raise ValueError(f"Projector: expected [..., {self.positions.shape[0]}, {self.in_dim}] "
                             f"(one image's patches), got {tuple(x.shape)}")
        return y + self.positions.to(y.dtype)


def sincos_axis(n: int, dim: int) -> torch.Tensor:
    """`[n, dim]` (float64, unscaled): the sines and cosines of positions 0..n-1 at dim / 2
    frequencies from 1 down to 1 / 10,000, the one-axis code `sincos_2d` puts on rows and
    columns and `sincos_frames` on frame indices."""
    freqs = 1.0 / 10_000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim // 2))
    angles = torch.arange(n, dtype=torch.float64)[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def sincos_2d(side: int, dim: int, rms: float) -> torch.Tensor:
    """`[side * side, dim]`: for each patch (row-major) the sines and cosines of its row (first
    half of `dim`) and its column (second half) at dim / 4 frequencies, scaled to root mean
    square `rms`. Patches in one row share half their code, as do patches in one column, so the
    LLM can read a row or a column off the values without first learning where each patch is."""
    if dim % 4:
        raise ValueError(f"sincos_2d: dim {dim} is not a multiple of 4")
    axis = sincos_axis(side, dim // 2)  # [side, dim/2]
    rows = repeat(axis, "r d -> (r c) d", c=side)
    cols = repeat(axis, "c d -> (r c) d", r=side)
    code = torch.cat([rows, cols], dim=-1)
    return (code * rms / code.pow(2).mean().sqrt()).float()


def sincos_frames(frames: int, dim: int, rms: float) -> torch.Tensor:
    """`[frames - 1, dim]`: the start of `VoCoVLM.frame_positions`, the sines and cosines of
    frame t at dim / 2 frequencies minus frame 0's (which carries no embedding), scaled to root
    mean square `rms`. The slow frequencies grow with t (an order the LLM can read off the
    values), the fast ones tell neighbouring frames apart; a zero start left *when* to be learned
    from nothing (nano video upper bound 0.424 / 0.449 against 0.505 / 0.561: RESULTS.md)."""
    code = sincos_axis(frames, dim)
    code = (code - code[0])[1:]
    return (code * rms / code.pow(2).mean().sqrt()).float()


__all__ = ["Projector", "sincos_2d", "sincos_axis", "sincos_frames"]
