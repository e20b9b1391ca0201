"""Mini CLIP: configs, pixel preprocessing and the patch features the VLM consumes.

The vision tower is a scaled-down `transformers` CLIP built from a config (nothing is
downloaded). The same `vision_config(cfg)` feeds both the contrastive `CLIPModel`
(stage `clip`) and the VLM's `CLIPVisionModel`, so a trained tower loads into the VLM
with a plain `load_state_dict`. Like LLaVA and VoCo-LLaMA, the VLM reads the
*penultimate* layer's patch tokens (CLS dropped): the last layer is shaped by the
contrastive objective, the one before it keeps more spatial detail.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from einops import rearrange
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig, CLIPVisionModel

from vocolab.core.config import Config

# OpenAI CLIP's normalisation constants: kept so that a user swapping in real CLIP
# weights gets the statistics those weights expect.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# transformers' CLIPTextModel treats eos_token_id == 2 as a legacy checkpoint and
# pools at argmax(input_ids) (the highest token id) instead of at the EOS token.
_LEGACY_CLIP_EOS = 2


def vision_config(cfg: Config) -> CLIPVisionConfig:
    """The vision tower's config; shared by `build_clip` and `VoCoVLM` so weights transfer."""
    v = cfg.vision
    return CLIPVisionConfig(
        image_size=cfg.data.image_size,
        patch_size=cfg.data.patch_size,
        num_channels=3,
        hidden_size=v.hidden_size,
        num_hidden_layers=v.layers,
        num_attention_heads=v.heads,
        intermediate_size=v.intermediate_size,
        projection_dim=v.projection_dim,
        attn_implementation="sdpa",  # no custom mask in the vision tower: any backend is fine
    )


def caption_positions(cfg: Config) -> int:
    """Text-tower context: ~16 tokens per object plus framing, rounded up to 32 (128 for nano)."""
    return int(math.ceil((16 * cfg.data.max_objects + 32) / 32) * 32)


def clip_config(cfg: Config, vocab_size: int, eos_id: int, pad_id: int) -> CLIPConfig:
    """A `CLIPConfig` whose text tower pools at *our* EOS token.

    Raises ValueError for `eos_id == 2`: transformers reads that value as a legacy
    OpenAI checkpoint and pools at the highest token id instead of at EOS, which
    would silently train the contrastive stage on the wrong token.
    """
    if eos_id == _LEGACY_CLIP_EOS:
        raise ValueError(
            "clip_config: eos_id == 2 makes transformers' CLIPTextModel pool at argmax(input_ids) "
            "(legacy OpenAI behaviour) instead of at the EOS token; give EOS another id")
    if not 0 <= eos_id < vocab_size or not 0 <= pad_id < vocab_size:
        raise ValueError(f"clip_config: eos_id {eos_id} / pad_id {pad_id} outside vocab of {vocab_size}")
    v = cfg.vision
    if v.text_hidden_size % v.heads:
        raise ValueError(f"vision.text_hidden_size: {v.text_hidden_size} is not divisible by "
                         f"vision.heads={v.heads} (the text tower uses the same head count)")
    text = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=v.text_hidden_size,
        num_hidden_layers=v.text_layers,
        num_attention_heads=v.heads,
        intermediate_size=4 * v.text_hidden_size,
        max_position_embeddings=caption_positions(cfg),
        projection_dim=v.projection_dim,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        bos_token_id=None,
        attn_implementation="sdpa",
    )
    return CLIPConfig(text_config=text.to_dict(), vision_config=vision_config(cfg).to_dict(),
                      projection_dim=v.projection_dim)


def build_clip(cfg: Config, vocab_size: int, eos_id: int, pad_id: int) -> CLIPModel:
    """A freshly initialised mini CLIP (vision + text towers) for the contrastive stage
    (seed the RNG beforehand for a reproducible init)."""
    return CLIPModel(clip_config(cfg, vocab_size, eos_id, pad_id))


def pixels_to_tensor(images) -> torch.Tensor:
    """uint8 `[..., H, W, 3]` (numpy or torch) -> normalised float `[..., 3, H, W]`.

    Leading dims are kept, so `[N, H, W, 3]` images and `[B, T, H, W, 3]` clips both work.
    """
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"pixels_to_tensor: expected a numpy array or tensor, got {type(images).__name__}")
    if images.dtype != torch.uint8 or images.dim() < 3 or images.shape[-1] != 3:
        raise ValueError(
            f"pixels_to_tensor: expected uint8 [..., H, W, 3], got {images.dtype} {tuple(images.shape)}")
    x = rearrange(images, "... h w c -> ... c h w").float() / 255.0
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(3, 1, 1)
    return (x - mean) / std


def patch_features(vision_model: CLIPVisionModel, pixel_values: torch.Tensor,
                   feature_layer: int | tuple[int, ...] = -2) -> torch.Tensor:
    """`[N, V, Dv]`: hidden states of `feature_layer` (0 = embeddings), CLS token dropped.

    A tuple of layers gives `[N, V, len(layers) * Dv]`, the layers concatenated on the
    channel axis (for compressors that read several vision layers, e.g. QueCC).
    """
    param = next(vision_model.parameters())
    out = vision_model(pixel_values=pixel_values.to(device=param.device, dtype=param.dtype),
                       output_hidden_states=True)
    if isinstance(feature_layer, int):
        return out.hidden_states[feature_layer][:, 1:]
    return torch.cat([out.hidden_states[layer][:, 1:] for layer in feature_layer], dim=-1)


__all__ = ["CLIP_MEAN", "CLIP_STD", "build_clip", "caption_positions", "clip_config",
           "patch_features", "pixels_to_tensor", "vision_config"]
