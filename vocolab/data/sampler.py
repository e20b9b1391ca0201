"""The training order: a seeded permutation per epoch that a resumed run can enter
part-way, so that resuming from a mid-epoch checkpoint ends with the same weights as
never stopping (Lightning itself restarts an interrupted epoch from its first batch).

Under data parallelism every process draws the same permutation and takes its own
share of each global batch, so N processes with a batch of B each see exactly the
global batches one process sees with a batch of N x B.
"""

from __future__ import annotations

import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[int]):
    """A fresh seeded permutation every epoch that can start part-way through one.

    Lightning restarts an interrupted epoch from its first batch; this sampler lets
    a resumed run skip exactly the batches it had already trained on, so resuming
    from a mid-epoch checkpoint ends with the same weights as never stopping.
    Lightning tells it the epoch through `set_epoch`. With `world` > 1 processes, this
    one (`rank`) yields the `rank`-th `batch`-sized share of every global batch of
    `world` x `batch` samples (whole global batches only).
    """

    def __init__(self, size: int, seed: int, rank: int = 0, world: int = 1, batch: int = 1):
        if not 0 <= rank < world:
            raise ValueError(f"ResumableSampler: rank {rank} outside a world of {world}")
        self.size, self.seed, self.epoch = size, seed, 0
        self.rank, self.world, self.batch = rank, world, batch
        self.resume: tuple[int, int] | None = None  # (epoch, samples already trained on, all ranks)

    def __len__(self) -> int:
        if self.world == 1:
            return self.size
        return self.size // (self.world * self.batch) * self.batch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        if self.world > 1:
            whole = self.size // (self.world * self.batch) * self.world * self.batch
            order = [i for k, i in enumerate(order[:whole]) if (k // self.batch) % self.world == self.rank]
        if self.resume is not None and self.resume[0] == self.epoch:
            order, self.resume = order[self.resume[1] :], None
        yield from order

    def resume_at(self, step: int, batch_size: int) -> None:
        """Skip the first `step` batches (of `batch_size` samples on this process)."""
        per_epoch = len(self) // batch_size  # drop_last: only whole batches are trained on
        epoch, batches = divmod(step, per_epoch)
        self.resume = (epoch, batches * batch_size) if batches else None
