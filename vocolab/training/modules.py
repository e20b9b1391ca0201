"""LightningModules for the training stages.

* `ClipModule`: the contrastive stage; trains a mini `CLIPModel` on (scene, caption).
* `VLMModule`:  `pretrain` (captions), `instruct` (QA) and any later stage that is
  next-token loss on the answer span under one mask mode; the mask and K are
  hyper-parameters, so the upper bound (`causal`) and the VoCo model (`voco`) are
  the same code with one argument changed.

Both take the resolved `Config` and the run's tokenizer from whoever builds them (the
recipe hands down the data module's), so a run resolves its config and builds its
tokenizer once; from a LightningCLI YAML they resolve `preset` + `overrides` themselves.
Both use AdamW with transformers' linear warm-up and cosine decay to a floor, stepped
per optimiser step.
"""

from __future__ import annotations

import lightning as L
import torch
from transformers import get_cosine_with_min_lr_schedule_with_warmup_lr_rate

from vocolab.core.config import MASK_MODES, Config
from vocolab.core.presets import resolve_config
from vocolab.core.layout import IGNORE_INDEX
from vocolab.data.batching import Batch
from vocolab.data.tokenizer import build_tokenizer, special_ids
from vocolab.evaluation.metrics import teacher_forced_exact_match
from vocolab.models.vision import build_clip
from vocolab.models.vlm import VoCoVLM
from vocolab.training.loading import load_init

LR_FLOOR = 0.1  # the cosine decays to this share of the base learning rate


def vocabulary(cfg: Config, tokenizer=None) -> tuple:
    """(tokenizer, special ids): the run's tokenizer when one is handed down, else built
    from `cfg.data` (a stage started on its own, e.g. from a LightningCLI YAML)."""
    tokenizer = build_tokenizer(cfg.data) if tokenizer is None else tokenizer
    return tokenizer, special_ids(tokenizer)


class _Optimised(L.LightningModule):
    """Shared optimiser set-up: AdamW over trainable parameters; linear warm-up over
    `train.warmup_frac` of the steps, then cosine decay to `LR_FLOOR` of the base lr."""

    cfg: Config
    lr: float
    steps: int

    def configure_optimizers(self):
        rest, where = [], []  # the per-patch image positions learn at `train.positions_lr_scale` x lr
        for name, param in self.named_parameters():
            if param.requires_grad:
                (where if name.endswith("projector.positions") else rest).append(param)
        groups = [{"params": rest}, {"params": where, "lr": self.lr * self.cfg.train.positions_lr_scale}]
        # one kernel for every parameter on a GPU, unless gradients are clipped: Lightning's mixed
        # precision refuses to clip for an optimizer that unscales inside its step (a fused one)
        fused = any(p.is_cuda for p in rest + where) and not self.cfg.train.grad_clip
        opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=self.lr,
                                weight_decay=self.cfg.train.weight_decay, betas=(0.9, 0.98), fused=fused or None)
        trainer = self._trainer  # the schedule follows the trainer's max_steps when it sets one
        steps = trainer.max_steps if trainer is not None and trainer.max_steps > 0 else self.steps
        warmup = max(1, round(steps * self.cfg.train.warmup_frac))
        # warm-up from lr/warmup (never 0: no step is wasted), cosine down to the floor by the last step
        sched = get_cosine_with_min_lr_schedule_with_warmup_lr_rate(opt, num_warmup_steps=warmup,
                                                                     num_training_steps=steps, min_lr_rate=LR_FLOOR)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    @property
    def distributed(self) -> bool:
        """True when this module trains in one of several processes (data parallelism)."""
        return self._trainer is not None and self._trainer.world_size > 1

    def global_token_mean(self, loss: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """`loss` (a mean over this process's answer tokens) rescaled so that the gradients
        the processes average equal those of one process over the whole global batch: the
        mean over every process's tokens, not the mean of the processes' means."""
        if not self.distributed:
            return loss
        tokens = (labels[:, 1:] != IGNORE_INDEX).sum().float()
        total = self._trainer.strategy.reduce(tokens.clone(), reduce_op="sum")
        return loss * tokens * self._trainer.world_size / total.clamp(min=1)


class ClipModule(_Optimised):
    """Contrastive image-caption training of the mini CLIP towers."""

    def __init__(self, cfg: Config | dict | None = None, preset: str = "nano", overrides: dict | None = None,
                 steps: int | None = None, lr: float | None = None, tokenizer=None):
        super().__init__()
        cfg = resolve_config(cfg, preset, overrides)
        self.cfg, self.steps = cfg, steps or cfg.train.clip_steps
        self.lr = lr or cfg.train.lr
        tokenizer, _ = vocabulary(cfg, tokenizer)
        self.clip = build_clip(cfg, len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id)
        self.val_retrieval: float | None = None  # the last validation check's, when there was one
        self.save_hyperparameters({"cfg": cfg.to_dict(), "steps": self.steps, "lr": self.lr})

    def _loss(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        from vocolab.models.vision import pixels_to_tensor

        out = self.clip(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        pixel_values=pixels_to_tensor(batch["pixels"]), return_loss=True)
        target = torch.arange(len(batch["input_ids"]), device=out.logits_per_image.device)
        acc = (out.logits_per_image.argmax(-1) == target).float().mean()
        return out.loss, acc

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, acc = self._loss(batch)  # under data parallelism the negatives are this process's batch
        self.log_dict({"train/loss": loss, "train/retrieval_acc": acc}, prog_bar=True,
                      batch_size=len(batch["input_ids"]), sync_dist=self.distributed)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, acc = self._loss(batch)
        self.log_dict({"val/loss": loss, "val/retrieval_acc": acc}, prog_bar=True, batch_size=len(batch["input_ids"]),
                      sync_dist=self.distributed)

    def on_validation_end(self) -> None:
        """Keep the check's retrieval (mean over the validation batches; reduced by now, as the
        stopping rule reads it here too): the recipe records where a clip stage stopped."""
        self.val_retrieval = round(float(self.trainer.callback_metrics["val/retrieval_acc"]), 4)


class VLMModule(_Optimised):
    """Answer-span next-token training of a `VoCoVLM` under one mask mode."""

    def __init__(self, cfg: Config | dict | None = None, preset: str = "nano", overrides: dict | None = None,
                 mask: str = "causal", stage: str = "instruct", steps: int | None = None,
                 lr: float | None = None, train_vision: bool | None = None, init_from: str | None = None,
                 tokenizer=None):
        super().__init__()
        if mask not in MASK_MODES:
            raise ValueError(f"mask {mask!r} is not one of {MASK_MODES}")
        cfg = resolve_config(cfg, preset, overrides)
        self.cfg, self.mask, self.stage = cfg, mask, stage
        self.steps, self.lr = steps or cfg.train.steps, lr or cfg.train.lr
        tokenizer, special = vocabulary(cfg, tokenizer)
        self.model = VoCoVLM(cfg, special, len(tokenizer))
        if init_from:
            load_init(self.model, cfg, init_from)
        train_vision = cfg.train.train_vision if train_vision is None else train_vision
        self.model.vision.requires_grad_(train_vision)
        self.save_hyperparameters({"cfg": cfg.to_dict(), "mask": mask, "stage": stage, "steps": self.steps,
                                   "lr": self.lr, "train_vision": train_vision})

    def setup(self, stage: str) -> None:
        """The frame embeddings and frame deltas learn only from clips of several frames. On lone
        images they are unused: DDP rejects a trainable weight that gets no gradient, and one joined to the graph
        with a zero gradient still enters the gradient norm, whose rounding then moves an image
        stage's whole run (the scene models stopped reproducing). Frozen before the optimiser and
        DDP see them, an image stage trains as it did before frame embeddings existed."""
        data = getattr(self.trainer, "datamodule", None)
        if data is not None:
            clips = data.split("train").frames > 1
            self.model.frame_positions.requires_grad_(clips)
            self.model.frame_deltas.requires_grad_(clips)

    def on_fit_start(self) -> None:
        """With a frozen vision tower, compute every image's features once (LLaVA-style)."""
        data = getattr(self.trainer, "datamodule", None)
        if data is not None and not any(p.requires_grad for p in self.model.vision.parameters()):
            data.attach_features(self.model.encode_images)

    def forward(self, batch: Batch, mask: str | None = None):
        return self.model(batch.input_ids, batch.layouts, pixels=batch.pixels, features=batch.features,
                          mask=mask or self.mask, labels=batch.labels)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        loss = self.global_token_mean(self(batch).loss, batch.labels)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch), sync_dist=self.distributed)
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        out = self(batch)
        acc = teacher_forced_exact_match(out.logits, batch.labels)
        self.log_dict({"val/loss": out.loss, "val/exact_match": acc}, prog_bar=True, batch_size=len(batch))
