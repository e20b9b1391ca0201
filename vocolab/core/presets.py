"""The named configurations: `nano` (the defaults, for a laptop CPU) and the GPU presets `small`
and `base`, nano's shape scaled up; `preset(name, **overrides)` and `resolve_config` build a
`Config` from a name, a dict or a Config.
"""

from __future__ import annotations

import typing
from typing import Any

from vocolab.core.config import Config, DataConfig, LLMConfig, TrainConfig, VisionConfig


def _gpu(name: str, *, image: int, patch: int, grid: int, frames: int, scenes: tuple[int, int],
         clips: tuple[int, int], vision: tuple[int, int, int, int], llm: tuple[int, int, int, int],
         init_std: float, lr: float, steps: int, storage: str = "render") -> Config:
    """A GPU preset: nano's shape scaled up. `vision` = (width, layers, heads, text layers),
    `llm` = (width, layers, heads, max positions); MLPs are 4x wide, the text tower and the
    CLIP projection as wide as the vision tower, no grouped-query attention, up to 8 objects."""
    v_width, v_layers, v_heads, text_layers = vision
    width, layers, heads, positions = llm
    return Config(
        preset=name,
        data=DataConfig(image_size=image, patch_size=patch, grid=grid, max_objects=8, train_scenes=scenes[0],
                        heldout_scenes=scenes[1], train_clips=clips[0], heldout_clips=clips[1], frames=frames,
                        storage=storage),
        vision=VisionConfig(hidden_size=v_width, layers=v_layers, heads=v_heads, intermediate_size=4 * v_width,
                            text_hidden_size=v_width, text_layers=text_layers, projection_dim=v_width),
        llm=LLMConfig(hidden_size=width, layers=layers, heads=heads, kv_heads=heads, intermediate_size=4 * width,
                      max_positions=positions, init_std=init_std),
        train=TrainConfig(batch_size=64, lr=lr, steps=steps, clip_steps=3000, clip_target=0.9, clip_check_every=100))


def _small() -> Config:
    return _gpu("small", image=128, patch=8, grid=6, frames=6, scenes=(20_000, 1000), clips=(8000, 500),
                vision=(192, 6, 6, 4), llm=(384, 6, 6, 2048), init_std=0.05, lr=5e-4, steps=6000, storage="arrays")


def _base() -> Config:
    return _gpu("base", image=336, patch=14, grid=8, frames=8, scenes=(50_000, 2000), clips=(20_000, 1000),
                vision=(384, 8, 6, 6), llm=(768, 8, 12, 8192), init_std=0.036, lr=3e-4, steps=20_000,
                storage="render")  # its training pixels would take ~160 GB as arrays: drawn when read


PRESETS: dict[str, typing.Callable[[], Config]] = {"nano": lambda: Config(preset="nano"), "small": _small,
                                                   "base": _base}


def preset(name: str, **overrides: Any) -> Config:
    """The named preset with dotted-key overrides applied."""
    if name not in PRESETS:
        raise ValueError(f"preset: unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    cfg = PRESETS[name]()
    return cfg.override(**overrides) if overrides else cfg


def resolve_config(cfg: Config | dict | None, preset_name: str, overrides: dict | None) -> Config:
    """A Config from an object, a dict (as stored in a checkpoint's hyper-parameters) or
    a preset name with dotted-key overrides (as written in a LightningCLI YAML file)."""
    if isinstance(cfg, dict):
        cfg = Config.from_dict(cfg)
    if isinstance(cfg, Config):
        return cfg.override(**overrides) if overrides else cfg
    return preset(preset_name, **(overrides or {}))


__all__ = ["PRESETS", "preset", "resolve_config"]
