"""The vision-to-language projector: LLaVA-1.5's `mlp2x_gelu`.

Two linear layers with a GELU between them map each CLIP patch feature (width Dv)
into the LLM's embedding space (width D). It is the only new module between the
two pretrained towers, and the one the `pretrain` stage aligns first.
"""

from __future__ import annotations

import torch
from torch import nn


class Projector(nn.Module):
    """`[..., in_dim] -> [..., out_dim]` via Linear -> GELU -> Linear."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.fc1 = nn.Linear(in_dim, out_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


__all__ = ["Projector"]
