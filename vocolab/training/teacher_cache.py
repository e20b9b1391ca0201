"""A frozen teacher's answer logits, computed once per training item (`train.teacher_cache`).

The `logits` objective compares the student's answer distributions with a frozen teacher's on the
same sequence. A multi-turn training sequence is fixed by its item (the image or clip, all of its
questions in order, K VoCo slots per frame), and the teacher does not change, so what the teacher
says about an item is the same in every epoch. Kept after the item's first batch, it costs one
teacher forward per item instead of one per step; from the second epoch on, a temporal step on the
2-core CPU is about a fifth cheaper (RESULTS.md, Temporal tuning).
"""

from __future__ import annotations

from typing import Callable

import torch

from vocolab.core.layout import IGNORE_INDEX
from vocolab.data.batching import Batch


class AnswerLogits:
    """Per (item, K): the teacher's logits `[n, vocab]` at the item's n scored positions (those
    whose next label is scored, as `distill.answer_kl` reads them)."""

    def __init__(self):
        self.kept: dict[tuple[int, int], torch.Tensor] = {}
        self.computed = 0  # items the teacher ran on (the rest were read back)

    def __len__(self) -> int:
        return len(self.kept)

    @staticmethod
    def key(batch: Batch, b: int) -> tuple[int, int]:
        frames = batch.layouts[b].frames
        return batch.items[b], frames[0].voco.length if frames else 0

    def logits(self, batch: Batch, teacher: Callable[[Batch], torch.Tensor]) -> torch.Tensor:
        """`[B, L, vocab]`: the teacher's logits (`teacher(batch)`) at every scored position of
        `batch`, zero elsewhere; the teacher runs only on the samples whose items it has not seen.
        A batch without items (not made by a data module) runs the teacher on all of it."""
        if batch.items is None:
            return teacher(batch)
        scored = batch.labels[:, 1:] != IGNORE_INDEX
        missing = [b for b in range(len(batch)) if self.key(batch, b) not in self.kept]
        if missing:
            fresh = teacher(batch.select(missing))
            for j, b in enumerate(missing):
                self.kept[self.key(batch, b)] = fresh[j, : scored.shape[1]][scored[b].to(fresh.device)].detach()
            self.computed += len(missing)
        some = self.kept[self.key(batch, 0)]
        out = some.new_zeros(len(batch), batch.input_ids.shape[1], some.shape[-1])
        for b in range(len(batch)):
            out[b, : scored.shape[1]][scored[b].to(out.device)] = self.kept[self.key(batch, b)]
        return out


__all__ = ["AnswerLogits"]
