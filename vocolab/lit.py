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
from .config import MASK_MODES, Config, resolve_config
from .data.tokenizer import build_tokenizer, special_ids
from .models import VoCoVLM, build_clip


def load_init(model: VoCoVLM, cfg: Config, path: str) -> None:
    """Initialise `model` from an earlier stage: a Lightning `.ckpt` of a `ClipModule`
    (vision tower only) or `VLMModule`, or a vocolab checkpoint folder. A checkpoint
    made for another preset or model shape is refused with a clear error."""
    from pathlib import Path

    source = Path(path)
    if source.is_dir():
        from .checkpoint import load_checkpoint

        loaded, loaded_cfg, _ = load_checkpoint(source)
        _same_model(cfg, loaded_cfg, path)
        model.load_backbone(loaded.state_dict())
        return
    if not source.is_file():
        raise FileNotFoundError(f"init_from: no checkpoint at {path}")
    try:
        ckpt = torch.load(source, map_location="cpu", weights_only=False)
        state, hparams = ckpt["state_dict"], ckpt.get("hyper_parameters", {})
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's input error
        raise ValueError(f"init_from: {path} is not a readable Lightning checkpoint ({err})") from err
    if "cfg" in hparams:
        _same_model(cfg, Config.from_dict(hparams["cfg"]), path)
    if any(k.startswith("clip.") for k in state):
        vision = {k.removeprefix("clip.vision_model."): v for k, v in state.items()
                  if k.startswith("clip.vision_model.")}
        model.vision.load_state_dict(vision)
    else:
        model.load_backbone({k.removeprefix("model."): v for k, v in state.items()})


def _same_model(cfg: Config, other: Config, path: str) -> None:
    if (cfg.preset, cfg.vision, cfg.llm, cfg.data.image_size, cfg.data.patch_size) != (
            other.preset, other.vision, other.llm, other.data.image_size, other.data.patch_size):
        raise ValueError(f"init_from: {path} was made for preset {other.preset!r} with another model "
                         f"shape; this run uses preset {cfg.preset!r}")


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
        trainer = self._trainer  # the schedule follows the trainer's max_steps when it sets one
        steps = trainer.max_steps if trainer is not None and trainer.max_steps > 0 else self.steps
        sched = warmup_cosine(opt, steps, self.cfg.train.warmup_frac)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class ClipModule(_Optimised):
    """Contrastive image-caption training of the mini CLIP towers."""

    def __init__(self, cfg: Config | dict | None = None, preset: str = "nano", overrides: dict | None = None,
                 steps: int | None = None, lr: float | None = None):
        super().__init__()
        cfg = resolve_config(cfg, preset, overrides)
        self.cfg, self.steps = cfg, steps or cfg.train.clip_steps
        self.lr = lr or cfg.train.lr
        tokenizer = build_tokenizer(cfg.data)
        self.clip = build_clip(cfg, len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id)
        self.save_hyperparameters({"cfg": cfg.to_dict(), "steps": self.steps, "lr": self.lr})

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

    def __init__(self, cfg: Config | dict | None = None, preset: str = "nano", overrides: dict | None = None,
                 mask: str = "causal", stage: str = "instruct", steps: int | None = None,
                 lr: float | None = None, train_vision: bool | None = None, init_from: str | None = None):
        super().__init__()
        if mask not in MASK_MODES:
            raise ValueError(f"mask {mask!r} is not one of {MASK_MODES}")
        cfg = resolve_config(cfg, preset, overrides)
        self.cfg, self.mask, self.stage = cfg, mask, stage
        self.steps, self.lr = steps or cfg.train.steps, lr or cfg.train.lr
        tokenizer = build_tokenizer(cfg.data)
        self.model = VoCoVLM(cfg, special_ids(tokenizer), len(tokenizer))
        if init_from:
            load_init(self.model, cfg, init_from)
        train_vision = cfg.train.train_vision if train_vision is None else train_vision
        self.model.vision.requires_grad_(train_vision)
        self.save_hyperparameters({"cfg": cfg.to_dict(), "mask": mask, "stage": stage, "steps": self.steps,
                                   "lr": self.lr, "train_vision": train_vision})

    def on_fit_start(self) -> None:
        """With a frozen vision tower, compute every image's features once (LLaVA-style)."""
        data = getattr(self.trainer, "datamodule", None)
        if data is not None and not any(p.requires_grad for p in self.model.vision.parameters()):
            data.attach_features(self.model.encode_images)

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


def load_model(path: str) -> VoCoVLM:
    """A trained `VoCoVLM` from a Lightning `.ckpt` of a `VLMModule` or a vocolab checkpoint folder."""
    from pathlib import Path

    source = Path(path)
    if source.is_dir():
        from .checkpoint import load_checkpoint

        return load_checkpoint(source)[0].eval()
    if not source.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        hparams = torch.load(source, map_location="cpu", weights_only=False).get("hyper_parameters", {})
    except Exception as err:  # noqa: BLE001 - an unreadable file is the user's input error
        raise ValueError(f"{path} is not a readable Lightning checkpoint ({err})") from err
    if "mask" not in hparams:
        raise ValueError(f"{path} is not a VLMModule checkpoint (a CLIP stage cannot answer questions)")
    module = VLMModule(hparams["cfg"], mask=hparams["mask"], stage=hparams.get("stage", "instruct"))
    load_init(module.model, module.cfg, str(source))
    return module.model.eval()
