"""Task arithmetic: one model's skill added to another's weights, no training.

Two models fine-tuned from the same start each moved its weights in their own direction: the image
VoCo model learned to squeeze a scene into K tokens, the video upper bound learned to answer about
clips. Adding a share of the first's move to the second (Ilharco et al., "Editing models with task
arithmetic", ICLR 2023) gives the temporal cell a start that already compresses a little: on the
validation clips the merge of the nano seed-0 models (the whole move added) reads 0.31 under the
`video` mask before any training (the video upper bound read that way: 0.25), and 850 distilled steps
from it reach 0.73 against 0.67 from the video upper bound alone (RESULTS.md, Temporal tuning).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def task_arithmetic(target: nn.Module, donor: nn.Module, base: nn.Module, scale: float) -> nn.Module:
    """A copy of `target` whose every floating-point weight is `target + scale * (donor - base)`.

    `donor` and `target` must both have been fine-tuned from `base` (the same architecture, the
    same parameter and buffer names and shapes); integer buffers are `target`'s."""
    if not scale > 0:
        raise ValueError(f"task_arithmetic: scale must be > 0, got {scale}")
    states = {name: m.state_dict() for name, m in (("target", target), ("donor", donor), ("base", base))}
    keys = {name: {k: tuple(v.shape) for k, v in s.items()} for name, s in states.items()}
    for name in ("donor", "base"):
        if keys[name] != keys["target"]:
            differ = sorted(set(keys[name].items()) ^ set(keys["target"].items()))[:3]
            raise ValueError(f"task_arithmetic: {name} and target differ in weights, e.g. {differ}")
    merged = copy.deepcopy(target)
    with torch.no_grad():
        merged.load_state_dict({k: v + scale * (states["donor"][k] - states["base"][k]) if v.is_floating_point()
                                else v for k, v in states["target"].items()})
    return merged


__all__ = ["task_arithmetic"]
