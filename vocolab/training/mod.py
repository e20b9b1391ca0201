"""The mixture-of-depths training stage: answer-span next-token loss under the causal
mask through a `zoo.mod.MoDVLM`, so the LLM, projector and routers train together.
"""

from __future__ import annotations

from typing import Sequence

import torch

from vocolab.training.modules import VLMModule
from vocolab.zoo.mod import MoDVLM
from vocolab.zoo.mod_config import MoDConfig


class MoDModule(VLMModule):
    """`VLMModule` (answer-span next-token loss, causal mask) training a `MoDVLM`: the
    LLM, projector and routers train together (vision frozen by default, as always).
    `self.model` is the `MoDVLM`; `self.model.vlm` the wrapped `VoCoVLM`."""

    def __init__(self, cfg=None, preset: str = "nano", overrides: dict | None = None, mask: str = "causal",
                 stage: str = "mod", steps: int | None = None, lr: float | None = None,
                 train_vision: bool | None = None, init_from: str | None = None, *, r: float = 0.2,
                 layers: str | Sequence[int] = "interleaved", selection: str = "learned", seed: int = 0,
                 mod: dict | None = None, tokenizer=None):
        if mask != "causal":
            raise ValueError(f"MoDModule: mask {mask!r} is not supported; MoD runs the causal model")
        # `mod` (a `MoDConfig.to_dict()`, as saved in the hyper-parameters) overrides r/layers/selection/seed
        config = MoDConfig(**mod) if mod is not None else MoDConfig(r=r, layers=layers, selection=selection,
                                                                     seed=seed)
        super().__init__(cfg, preset, overrides, mask=mask, stage=stage, steps=steps, lr=lr,
                         train_vision=train_vision, init_from=init_from, tokenizer=tokenizer)
        self.model = MoDVLM(self.model, config=config)
        self.save_hyperparameters(dict(self.hparams) | {"mod": config.to_dict()})

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        gates = []
        for rec in self.model.records:  # the mean gate w of the computed vision tokens (no host sync)
            if rec.scores is not None and rec.selected.numel():
                w = rec.scores.gather(1, rec.selected.flatten(1)).float().sigmoid()
                ok = rec.frame_ok[:, :, None].expand_as(rec.selected).flatten(1).float()
                gates.append((w * ok).sum() / ok.sum().clamp(min=1))
        if gates:
            self.log("train/router_gate", torch.stack(gates).mean(), batch_size=len(batch), sync_dist=self.distributed)
        return loss


__all__ = ["MoDModule"]
