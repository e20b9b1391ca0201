"""Build the Lightning `Trainer` every stage uses, and run one stage.

One place decides accelerator, precision, determinism, logging and checkpointing, so
the stages, the CLI and the notebooks train identically.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from vocolab.core.config import Config
from vocolab.core.runtime import quiet_lightning


def precision(cfg: Config) -> str:
    """`auto`: bf16 autocast on a GPU that supports it, fp32 on CPU."""
    if cfg.train.precision != "auto":
        return cfg.train.precision
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def deterministic() -> bool | None:
    """True when training runs on the CPU. There, two runs of one seed otherwise part within 20
    steps (with 2 threads some backward kernel accumulates in parallel: weights 2e-7 apart after
    80 nano pretrain steps, eager or SDPA attention alike), and on the nano recipe's plateaus such
    a difference decides whether colour binds (RESULTS.md); the deterministic kernels cost no
    measurable time there. GPUs (and MPS) are left as they are: cuBLAS would need its workspace
    set before CUDA starts, and bf16 kernels are not bitwise reproducible anyway."""
    return None if torch.cuda.is_available() or torch.backends.mps.is_available() else True


def loggers(out: Path, name: str) -> list:
    """CSV always (read back by the notebooks); TensorBoard too when installed."""
    found = [CSVLogger(out, name=name, version="")]
    try:
        import tensorboard  # noqa: F401
        from lightning.pytorch.loggers import TensorBoardLogger

        found.append(TensorBoardLogger(out, name=name, version=""))
    except ImportError:
        pass
    return found


def make_trainer(cfg: Config, out: str | Path, name: str, steps: int, val_every: int | None = None,
                 progress: bool = True, checkpoint: bool = True, callbacks=(), **kwargs) -> L.Trainer:
    """The Trainer of every stage and cell: `steps` optimiser steps, CSV logs (and checkpoints
    every quarter, unless `checkpoint=False`) under `out/<name>/`, gradient clipping and
    precision from `cfg.train`; `callbacks` are added to the checkpointing one. With
    `train.ema_decay`, Lightning's EMA callback keeps a moving average of the weights: validation
    reads it, checkpoints store it, and the module ends training holding it."""
    quiet_lightning()  # banners and tips are noise in notebooks and the CLI's output
    out = Path(out)
    callbacks = list(callbacks)
    if checkpoint:
        callbacks.append(ModelCheckpoint(dirpath=out / name / "checkpoints", save_last=True,
                                         every_n_train_steps=max(1, steps // 4), save_top_k=-1,
                                         filename="step{step}", auto_insert_metric_name=False))
    if cfg.train.ema_decay:  # parameters only: the models' buffers are constants (rotary frequencies)
        from lightning.pytorch.callbacks import EMAWeightAveraging  # imported only where a stage asks for it

        callbacks.append(EMAWeightAveraging(decay=cfg.train.ema_decay, use_buffers=False))
    if progress and torch.cuda.is_available():  # reading the loss for the bar waits for the GPU: not every step
        from lightning.pytorch.callbacks import TQDMProgressBar

        callbacks.append(TQDMProgressBar(refresh_rate=20))
    devices = cfg.train.devices
    strategy = cfg.train.strategy if cfg.train.strategy != "auto" or devices == 1 else "ddp"
    return L.Trainer(
        accelerator="auto", devices=devices, strategy=strategy, precision=precision(cfg), max_steps=steps,
        use_distributed_sampler=False,  # the data module's sampler splits global batches itself
        logger=loggers(out, name), callbacks=callbacks, enable_checkpointing=checkpoint,
        enable_progress_bar=progress, enable_model_summary=False, num_sanity_val_steps=0,
        log_every_n_steps=min(10, max(1, steps // 10)),
        gradient_clip_val=cfg.train.grad_clip or None, deterministic=kwargs.pop("deterministic", deterministic()),
        val_check_interval=val_every if val_every else None,
        check_val_every_n_epoch=None if val_every else 1, limit_val_batches=kwargs.pop("limit_val_batches", 1.0),
        **kwargs,
    )
