"""Model pieces, one per file: mini CLIP vision tower, projector, mini LLaMA, the frame deltas
of a clip, the VoCoVLM that joins them, the inputs every forward prepares, and checkpoints."""

from vocolab.models.checkpoint import load_checkpoint, save_checkpoint
from vocolab.models.vlm import VoCoVLM

__all__ = ["VoCoVLM", "load_checkpoint", "save_checkpoint"]
