"""Save and load a `VoCoVLM` as a self-describing directory.

    model.safetensors   weights (tied embeddings stored once; safetensors, no pickle)
    config.json         the `Config` the model was built from
    meta.json           caller metadata + special token ids, vocab size, dtype, versions
                        and the weights' sha256 (a flipped byte is caught, not loaded)

Everything needed to rebuild the model is in the directory, so `load_checkpoint`
takes nothing but the path. Writing goes to a temporary sibling directory that is
renamed into place only when complete: a crash never leaves a half-written
checkpoint behind (nor destroys the previous one).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import transformers
from safetensors.torch import load_model, save_model

from vocolab.core.config import Config
from vocolab.core.layout import SpecialIds
from vocolab.core.outputs import staged_output
from vocolab.data.vocab import words
from vocolab.models.vlm import VoCoVLM

WEIGHTS, CONFIG, META = "model.safetensors", "config.json", "meta.json"
FORMAT_VERSION = 1
_RESERVED = ("format_version", "vocolab_version", "torch_version", "transformers_version",
             "special_ids", "vocab_size", "vocabulary", "dtype", "weights_sha256")


def vocolab_version() -> str:
    """The installed package's version, else the package attribute, else "unknown"."""
    try:
        from importlib.metadata import version

        return version("vocolab")
    except Exception:
        import vocolab

        return str(getattr(vocolab, "__version__", "unknown"))


def save_checkpoint(model: VoCoVLM, cfg: Config, directory: str | os.PathLike,
                    metadata: dict[str, Any] | None = None) -> Path:
    """Write `model` atomically to `directory` (replacing a previous checkpoint there)."""
    directory = Path(directory)
    metadata = dict(metadata or {})
    clash = sorted(set(metadata) & set(_RESERVED))
    if clash:
        raise ValueError(f"save_checkpoint: metadata keys {clash} are reserved")
    if _architecture(cfg) != _architecture(model.cfg):
        raise ValueError("save_checkpoint: cfg does not describe this model (vision/llm/image "
                         "settings differ from model.cfg); the checkpoint could not be loaded")
    if directory.exists() and not _replaceable(directory):
        raise ValueError(f"save_checkpoint: {directory} exists and is not a vocolab checkpoint; "
                         f"refusing to overwrite it")
    meta = {
        **metadata,
        "format_version": FORMAT_VERSION,
        "vocolab_version": vocolab_version(),
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "special_ids": asdict(model.special),
        "vocab_size": model.vocab_size,
        "vocabulary": words(cfg.data),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
    }
    json.dumps(meta)  # fail on unserialisable metadata before touching the disk

    with staged_output(directory) as tmp:
        save_model(model, str(tmp / WEIGHTS))
        meta["weights_sha256"] = _sha256(tmp / WEIGHTS)
        cfg.to_json(tmp / CONFIG)
        (tmp / META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return directory


def load_checkpoint(directory: str | os.PathLike, map_location: str | torch.device = "cpu",
                    dtype: torch.dtype | None = None) -> tuple[VoCoVLM, Config, dict]:
    """`(model, cfg, meta)` from a directory written by `save_checkpoint`, in the stored
    dtype or in `dtype` (the weights are cast on loading; buffers the file does not hold,
    such as rotary frequencies, are computed in `dtype`, never rounded through the stored one).

    Every failure (missing directory or file, unreadable JSON, corrupt weights,
    weights that do not fit the stored config) is a ValueError naming the problem.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"load_checkpoint: {directory} is not a directory")
    missing = [name for name in (WEIGHTS, CONFIG, META) if not (directory / name).is_file()]
    if missing:
        raise ValueError(f"load_checkpoint: {directory} lacks {missing}")
    cfg = Config.from_json(directory / CONFIG)  # raises ValueError with the field's name
    try:
        meta = json.loads((directory / META).read_text())
        special = SpecialIds(**meta["special_ids"])
        vocab_size = int(meta["vocab_size"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ValueError(f"load_checkpoint: {directory / META} is unreadable or incomplete: {err}") from err
    vocabulary = words(cfg.data)
    if meta.get("vocabulary", vocabulary) != vocabulary:
        raise ValueError(f"load_checkpoint: {directory} was trained with another vocabulary "
                         f"({len(meta['vocabulary'])} words; this version of vocolab has {len(vocabulary)}): its "
                         f"token ids mean other words now; train it again")
    expected = meta.get("weights_sha256")
    if expected is not None and _sha256(directory / WEIGHTS) != expected:
        raise ValueError(f"load_checkpoint: {directory / WEIGHTS} is corrupt (sha256 differs from meta.json)")

    model = VoCoVLM(cfg, special, vocab_size)
    dtype = dtype or getattr(torch, meta.get("dtype", "float32"), None)
    if isinstance(dtype, torch.dtype):
        model.to(dtype)
    try:
        missing, unexpected = load_model(model, str(directory / WEIGHTS), strict=False, device=str(map_location))
        # a model saved before frames had embeddings (or deltas) never told frames apart: its are zero
        if unexpected or set(missing) - {"frame_positions", "frame_deltas.weight"}:
            raise RuntimeError(f"missing {sorted(missing)}, unexpected {sorted(unexpected)}")
        if "frame_positions" in missing:
            model.frame_positions.data.zero_()
    except RuntimeError as err:  # missing/unexpected keys or shape mismatch
        raise ValueError(f"load_checkpoint: weights in {directory} do not match its config: {err}") from err
    except Exception as err:  # safetensors' own errors: truncated header, bad JSON, bad offsets
        raise ValueError(f"load_checkpoint: {directory / WEIGHTS} is corrupt: {err}") from err
    model.to(map_location)
    return model, cfg, meta


def load_if_saved_for(directory: str | os.PathLike, **expected) -> tuple[VoCoVLM, Config, dict] | None:
    """`load_checkpoint(directory)` when its meta.json holds every `expected` field (a run's
    key), else None. The meta is read before the weights, so a model saved for another
    config (say, by a version with other defaults) is trained again, never loaded."""
    path = Path(directory) / META
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if any(meta.get(name) != value for name, value in expected.items()):
        return None
    return load_checkpoint(directory)


def _architecture(cfg: Config) -> tuple:
    """The config fields that decide parameter shapes (the backend does not)."""
    llm = {k: v for k, v in asdict(cfg.llm).items() if k != "attn_implementation"}
    return asdict(cfg.vision), llm, cfg.data.image_size, cfg.data.patch_size


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _replaceable(directory: Path) -> bool:
    """Only an empty directory or a previous checkpoint may be replaced."""
    return directory.is_dir() and (not any(directory.iterdir()) or (directory / META).is_file())


__all__ = ["CONFIG", "META", "WEIGHTS", "load_checkpoint", "load_if_saved_for", "save_checkpoint", "vocolab_version"]
