"""`vocolab fit --config FILE`: one training stage from a LightningCLI YAML file.

The YAML files in `configs/<preset>/` chain the stages through `init_from`
(each stage starts from the previous stage's `last.ckpt`), so the recipe that
`vocolab quickstart` runs in one process can also be run stage by stage.
"""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path
from unittest import mock

import lightning as L
import torch


def run_fit(config: str, extra: list[str]) -> None:
    from lightning.pytorch.cli import LightningCLI

    from vocolab.data.module import VoCoDataModule
    from vocolab.training.trainer import deterministic

    path = Path(config)
    if not path.is_file():
        raise FileNotFoundError(f"config file {config} not found")
    bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    # the data module's sampler splits global batches over processes itself (`--trainer.devices N`)
    # and on the CPU the deterministic kernels, as every stage of `make_trainer` (a seed reproduces)
    defaults = {"precision": "bf16-mixed" if bf16 else "32-true", "log_every_n_steps": 10,
                "use_distributed_sampler": False, "deterministic": deterministic()}
    report = io.StringIO()
    try:  # parse and build everything first, so bad input fails before any training
        # LightningCLI reads our arguments from `args`: hide the outer command line from it
        with mock.patch.object(sys, "argv", sys.argv[:1]), contextlib.redirect_stderr(report):
            cli = LightningCLI(L.LightningModule, VoCoDataModule, subclass_mode_model=True, run=False,
                               args=["--config", str(path), *extra], trainer_defaults=defaults,
                               save_config_kwargs={"overwrite": True}, parser_kwargs={"exit_on_error": False})
    except SystemExit as exit_:  # argparse reports unknown arguments by exiting
        raise ValueError(f"{config}: {_cause(report.getvalue())}") from exit_
    except Exception as err:  # noqa: BLE001 - every failure here is a problem with the input
        raise ValueError(f"{config}: {_cause(str(err))}") from err
    try:
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    except SystemExit:
        if cli.trainer.interrupted:  # Lightning ends a Ctrl-C with exit(1): say what it was
            raise KeyboardInterrupt from None
        raise


def _cause(message: str) -> str:
    """The informative line of a jsonargparse/argparse report (which lists every Union
    member it tried, or the whole usage text)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    reasons = [line[2:] for line in lines if line.startswith("- ") and "NoneType" not in line]
    errors = [line.removeprefix("error: ") for line in lines if line.startswith("error:")]
    return (reasons or errors or lines or ["invalid stage configuration"])[0]
