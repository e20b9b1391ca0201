"""Which wrong answer a model gives: a confusion matrix per question family.

Accuracy says how often `spatial` is right. It does not say how a model that fails is
wrong, and the two ways call for different fixes: a model that answers "above" when the
gold answer is "left" has not found the line the two objects share (the axis); one that
answers "right" for "left" has found it but not the order along it. `grouped_accuracy`
splits the first from the second wherever a family's answers fall into such groups
(`ANSWER_GROUPS`). Predictions outside the family's answers (a colour where a direction
was asked, an empty string) are counted in their own column, `OTHER`.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
from torchmetrics.functional.classification import multiclass_confusion_matrix

from vocolab.evaluation.metrics import normalise

OTHER = "(other)"
SPATIAL_AXES = {"horizontal": ("left", "right"), "vertical": ("above", "below")}
ANSWER_GROUPS: dict[str, Mapping[str, Sequence[str]]] = {"spatial": SPATIAL_AXES}


def answer_confusion(preds: Sequence[str], answers: Sequence[str], families: Sequence[str], family: str) -> dict:
    """Counts of (gold answer, predicted answer) over the questions of `family`.

    `labels` are the family's answers (its gold answers and the members of its answer
    groups, sorted) and then `OTHER`; `counts[i][j]` is how often gold `labels[i]` was
    answered `labels[j]`, so a row sums to that answer's questions. Where the family has
    answer groups, `groups` holds `grouped_accuracy`."""
    rows = [(normalise(a), normalise(p)) for p, a, f in zip(preds, answers, families, strict=True) if f == family]
    if not rows:
        raise ValueError(f"answer_confusion: no {family!r} questions among {len(answers)}")
    grouped = {answer for members in ANSWER_GROUPS.get(family, {}).values() for answer in members}
    labels = sorted({gold for gold, _ in rows} | grouped)
    index = {label: i for i, label in enumerate(labels)}
    target = torch.tensor([index[gold] for gold, _ in rows])
    pred = torch.tensor([index.get(p, len(labels)) for _, p in rows])
    counts = multiclass_confusion_matrix(pred, target, num_classes=len(labels) + 1)[: len(labels)]
    out = {"labels": [*labels, OTHER], "counts": counts.tolist()}
    if family in ANSWER_GROUPS:
        out["groups"] = grouped_accuracy(out, ANSWER_GROUPS[family])
    return out


def grouped_accuracy(confusion: Mapping, groups: Mapping[str, Sequence[str]]) -> dict:
    """`group`: the share of answers in the gold answer's group (for `spatial`: the right
    axis); `within_group`: of those, the share exactly right (the right order along it).
    Chance, for a model guessing among two groups of two, is 0.5 and 0.5."""
    group_of = {answer: name for name, members in groups.items() for answer in members}
    labels, counts = confusion["labels"], np.asarray(confusion["counts"])
    total = in_group = right = 0
    for i, gold in enumerate(labels[: len(counts)]):
        for j, pred in enumerate(labels):
            n = int(counts[i, j])
            total += n
            if gold in group_of and group_of.get(pred) == group_of[gold]:
                in_group += n
                right += n if i == j else 0
    return {"group": in_group / total if total else None, "within_group": right / in_group if in_group else None,
            "examples": total}
