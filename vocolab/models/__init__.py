"""Model pieces: mini CLIP vision tower, projector, mini LLaMA and the VoCoVLM that joins them."""

from .llm import build_llm, llama_config
from .projector import Projector
from .vision import build_clip, clip_config, patch_features, pixels_to_tensor, vision_config
from .vlm import IGNORE_INDEX, MASK_BACKENDS, VoCoVLM, check_backend, labels_from_layouts

__all__ = [
    "IGNORE_INDEX", "MASK_BACKENDS", "Projector", "VoCoVLM", "build_clip", "build_llm",
    "check_backend", "clip_config", "labels_from_layouts", "llama_config", "patch_features",
    "pixels_to_tensor", "vision_config",
]
