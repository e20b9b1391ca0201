"""`vocolab fit --config FILE`: one training stage from a LightningCLI YAML file.

The YAML files in `configs/<preset>/` chain the stages through `init_from`
(each stage starts from the previous stage's `last.ckpt`), so the recipe that
`vocolab quickstart` runs in one process can also be run stage by stage.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L


def run_fit(config: str, extra: list[str]) -> None:
    from lightning.pytorch.cli import LightningCLI

    from .data.module import VoCoDataModule

    path = Path(config)
    if not path.is_file():
        raise FileNotFoundError(f"config file {config} not found")
    try:
        LightningCLI(L.LightningModule, VoCoDataModule, subclass_mode_model=True,
                     args=["fit", "--config", str(path), *extra],
                     save_config_kwargs={"overwrite": True},
                     parser_kwargs={"fit": {"exit_on_error": False}})
    except SystemExit as exit_:  # jsonargparse reports bad files and keys by exiting
        raise ValueError(f"{config}: invalid stage configuration") from exit_
    except Exception as err:
        if type(err).__name__ == "ArgumentError":
            raise ValueError(f"{config}: {err}") from err
        raise
