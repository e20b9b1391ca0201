"""The training order: a seeded permutation per epoch that a resumed run can enter
part-way, so that resuming from a mid-epoch checkpoint ends with the same weights as
never stopping (Lightning itself restarts an interrupted epoch from its first batch).
"""

from __future__ import annotations

import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[int]):
    """A fresh seeded permutation every epoch that can start part-way through one.

    Lightning restarts an interrupted epoch from its first batch; this sampler lets
    a resumed run skip exactly the batches it had already trained on, so resuming
    from a mid-epoch checkpoint ends with the same weights as never stopping.
    Lightning tells it the epoch through `set_epoch`.
    """

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0
        self.resume: tuple[int, int] | None = None  # (epoch, samples already trained on)

    def __len__(self) -> int:
        return self.size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        if self.resume is not None and self.resume[0] == self.epoch:
            order, self.resume = order[self.resume[1] :], None
        yield from order

    def resume_at(self, step: int, batch_size: int) -> None:
        per_epoch = self.size // batch_size  # drop_last: only whole batches are trained on
        epoch, batches = divmod(step, per_epoch)
        self.resume = (epoch, batches * batch_size) if batches else None
