"""Starting a model from an earlier stage or reading a trained one back.

A stage chain (the recipe, or LightningCLI YAML files chained through `init_from`)
initialises each stage from the previous one's checkpoint: a Lightning `.ckpt` of a
`ClipModule` (vision tower only) or `VLMModule`, or a vocolab checkpoint folder.
A checkpoint made for another preset or model shape is refused with a clear error.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vocolab.core.config import Config
from vocolab.data.tokenizer import build_tokenizer, special_ids
from vocolab.models.vlm import VoCoVLM


def load_init(model: VoCoVLM, cfg: Config, path: str) -> None:
    """Initialise `model` from an earlier stage: a Lightning `.ckpt` of a `ClipModule`
    (vision tower only) or `VLMModule`, or a vocolab checkpoint folder. A checkpoint
    made for another preset or model shape is refused with a clear error."""
    source = Path(path)
    if source.is_dir():
        from vocolab.models.checkpoint import load_checkpoint

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


def load_model(path: str) -> VoCoVLM:
    """A trained `VoCoVLM` from a Lightning `.ckpt` of a `VLMModule` or a vocolab checkpoint folder."""
    source = Path(path)
    if source.is_dir():
        from vocolab.models.checkpoint import load_checkpoint

        return load_checkpoint(source)[0].eval()
    if not source.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        hparams = torch.load(source, map_location="cpu", weights_only=False).get("hyper_parameters", {})
    except Exception as err:  # noqa: BLE001 - an unreadable file is the user's input error
        raise ValueError(f"{path} is not a readable Lightning checkpoint ({err})") from err
    if "mask" not in hparams:
        raise ValueError(f"{path} is not a VLMModule checkpoint (a CLIP stage cannot answer questions)")
    cfg = Config.from_dict(hparams["cfg"])
    tokenizer = build_tokenizer(cfg.data)
    model = VoCoVLM(cfg, special_ids(tokenizer), len(tokenizer))
    load_init(model, cfg, str(source))
    return model.eval()
