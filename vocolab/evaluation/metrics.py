"""Exact match, the one accuracy vocolab reports, and retention.

`FamilyExactMatch` scores generated answers (text), overall and per question family, as
a torchmetrics `Metric`: it accumulates over batches and syncs across processes, so the
same object works in a notebook loop, in a Lightning validation step and on several
GPUs; the held-out runs and the symbolic baselines both score through it.
`teacher_forced_exact_match` is the same criterion on logits during training, and
`retention` places a compressed model between its lower and upper bounds.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torchmetrics import Metric

from vocolab.core.layout import IGNORE_INDEX


def normalise(text: str) -> str:
    return " ".join(text.lower().split())


class FamilyExactMatch(Metric):
    """Share of answers equal (after whitespace/case normalisation) to the gold answer."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, families: Sequence[str], **kwargs):
        super().__init__(**kwargs)
        self.families = list(families)
        self._index = {f: i for i, f in enumerate(self.families)}
        self.add_state("correct", default=torch.zeros(len(self.families)), dist_reduce_fx="sum")
        self.add_state("total", default=torch.zeros(len(self.families)), dist_reduce_fx="sum")

    def update(self, preds: Sequence[str], targets: Sequence[str], families: Sequence[str]) -> None:
        if not len(preds) == len(targets) == len(families):
            raise ValueError(f"FamilyExactMatch: {len(preds)} predictions, {len(targets)} targets, "
                             f"{len(families)} families")
        for pred, target, family in zip(preds, targets, families):
            if family not in self._index:
                raise ValueError(f"FamilyExactMatch: unknown family {family!r}; known: {self.families}")
            i = self._index[family]
            self.total[i] += 1
            self.correct[i] += float(normalise(pred) == normalise(target))

    def compute(self) -> dict:
        total = self.total.sum().clamp(min=1)
        per_family = {f: (self.correct[i] / self.total[i]).item() for f, i in self._index.items()
                      if self.total[i] > 0}
        return {"accuracy": (self.correct.sum() / total).item(), "per_family": per_family,
                "examples": int(self.total.sum().item())}


def teacher_forced_hits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """`bool [B]`: is every answer token (and EOS) of the sample the argmax under teacher
    forcing? For greedy decoding this equals exact match of the generated answer."""
    pred, gold = logits[:, :-1].argmax(-1), labels[:, 1:]
    scored = gold != IGNORE_INDEX
    return ((pred == gold) | ~scored).all(-1)


def teacher_forced_exact_match(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Share of samples `teacher_forced_hits` counts."""
    return teacher_forced_hits(logits, labels).float().mean()


def retention(accuracy: float, lower: float, upper: float) -> float | None:
    """(acc - lower) / (upper - lower): 1 = as good as all image tokens, 0 = as bad as the
    untrained-to-compress model. None when the bounds do not separate."""
    gap = upper - lower
    return None if gap <= 1e-9 else (accuracy - lower) / gap
