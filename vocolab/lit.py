"""LightningModules for the training stages (DESIGN.md 5).

* `ClipModule`: the contrastive stage; trains a mini `CLIPModel` on (scene, caption).
* `VLMModule`:  `pretrain` (captions), `instruct` (QA) and any later stage that is
  next-token loss on the answer span under one mask mode; the mask and K are
  hyper-parameters, so the upper bound (`causal`) and the VoCo model (`voco`) are
  the same code with one argument changed.

Both use AdamW with linear warm-up and cosine decay, stepped per optimiser step.
"""

from __future__ import annotations

import math

import lightning as L
import torch

from .batching import Batch
from .config import MASK_MODES, Config
from .layout import SpecialIds
from .models import VoCoVLM, build_clip


def warmup_cosine(optimizer: torch.optim.Optimizer, steps: int, warmup_frac: float, floor: float = 0.1):
    """Linear warm-up to the base lr, then cosine decay to `floor` x base lr."""
    warmup = max(1, int(round(steps * warmup_frac)))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, steps - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class _Optimised(L.LightningModule):
    """Shared optimiser set-up: AdamW over trainable parameters, warm-up + cosine."""

    cfg: Config
    lr: float
    steps: int

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.cfg.train.weight_decay,
                                betas=(0.9, 0.98))
        sched = warmup_cosine(opt, self.steps, self.cfg.train.warmup_frac)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class ClipModule(_Optimised):
    """Contrastive image-caption training of the mini CLIP towers."""

    def __init__(self, cfg: Config, vocab_size: int, eos_id: int, pad_id: int,
                 steps: int | None = None, lr: float | None = None):
        super().__init__()
        self.cfg, self.steps = cfg, steps or cfg.train.steps
        self.lr = lr or cfg.train.lr
        self.clip = build_clip(cfg, vocab_size, eos_id, pad_id)
        self.save_hyperparameters({"config": cfg.to_dict(), "vocab_size": vocab_size, "steps": self.steps,
                                   "lr": self.lr})

    def _loss(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        from .models import pixels_to_tensor

        out = self.clip(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        pixel_values=pixels_to_tensor(batch["pixels"]), return_loss=True)
        target = torch.arange(len(batch["input_ids"]), device=out.logits_per_image.device)
        acc = (out.logits_per_image.argmax(-1) == target).float().mean()
        return out.loss, acc

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, acc = self._loss(batch)
        self.log_dict({"train/loss": loss, "train/retrieval_acc": acc}, prog_bar=True, batch_size=len(batch["input_ids"]))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, acc = self._loss(batch)
        self.log_dict({"val/loss": loss, "val/retrieval_acc": acc}, prog_bar=True, batch_size=len(batch["input_ids"]))


class VLMModule(_Optimised):
    """Answer-span next-token training of a `VoCoVLM` under one mask mode."""

    def __init__(self, cfg: Config, special: SpecialIds, vocab_size: int, mask: str = "causal",
                 train_vision: bool = False, steps: int | None = None, lr: float | None = None,
                 stage: str = "instruct"):
        super().__init__()
        if mask not in MASK_MODES:
            raise ValueError(f"mask {mask!r} is not one of {MASK_MODES}")
        self.cfg, self.mask, self.stage = cfg, mask, stage
        self.steps, self.lr = steps or cfg.train.steps, lr or cfg.train.lr
        self.model = VoCoVLM(cfg, special, vocab_size)
        self.model.vision.requires_grad_(train_vision)
        self.save_hyperparameters({"config": cfg.to_dict(), "special": vars(special), "vocab_size": vocab_size,
                                   "mask": mask, "train_vision": train_vision, "steps": self.steps,
                                   "lr": self.lr, "stage": stage})

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch.to(device) if isinstance(batch, Batch) else super().transfer_batch_to_device(
            batch, device, dataloader_idx)

    def forward(self, batch: Batch, mask: str | None = None):
        return self.model(batch.input_ids, batch.layouts, pixels=batch.pixels, features=batch.features,
                          mask=mask or self.mask, labels=batch.labels)

    def _answer_exact_match(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Share of samples whose every answer token (and EOS) is the argmax under teacher
        forcing: for greedy decoding this equals exact match of the generated answer."""
        pred, gold = logits[:, :-1].argmax(-1), labels[:, 1:]
        scored = gold != -100
        return ((pred == gold) | ~scored).all(-1).float().mean()

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        out = self(batch)
        self.log("train/loss", out.loss, prog_bar=True, batch_size=len(batch))
        return out.loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        out = self(batch)
        acc = self._answer_exact_match(out.logits, batch.labels)
        self.log_dict({"val/loss": out.loss, "val/exact_match": acc}, prog_bar=True, batch_size=len(batch))
