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
    def keys(batch: Batch) -> list[tuple[int, int]]:
        """Each sample's (item, K): the same item asked with another K is another sequence."""
        return [(item, layout.frames[0].voco.length if layout.frames else 0)
                for item, layout in zip(batch.items, batch.layouts)]

    def logits(self, batch: Batch, teacher: Callable[[Batch], torch.Tensor]) -> torch.Tensor:
        """`[B, L, vocab]`: the teacher's logits (`teacher(batch)`) at every scored position of
        `batch`, zero elsewhere; the teacher runs only on the samples whose items it has not seen.
        A batch without items (not made by a data module) runs the teacher on all of it."""
        if batch.items is None:
            return teacher(batch)
        keys = self.keys(batch)
        scored = batch.labels[:, 1:] != IGNORE_INDEX  # a boolean index orders rows by sample, then position
        missing = [b for b, key in enumerate(keys) if key not in self.kept]
        if missing:
            fresh = teacher(batch.select(missing)).detach()
            mine = scored[missing].to(fresh.device)
            rows = fresh[:, :-1][mine].split(mine.sum(1).tolist())
            self.kept.update((keys[b], r) for b, r in zip(missing, rows))
            self.computed += len(missing)
        kept = torch.cat([self.kept[key] for key in keys])
        out = kept.new_zeros(len(batch), batch.input_ids.shape[1], kept.shape[-1])
        out[:, :-1][scored.to(out.device)] = kept
        return out


__all__ = ["AnswerLogits"]
