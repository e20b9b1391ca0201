"""Importing this module registers every built-in method (one file each)."""

from . import dropping, fastv, perceiver, pooling, prumerge, qformer, quecc  # noqa: F401
from .registry import MethodInfo, register

# VoCo is the mask (vocolab.masks), not a module: registered for its tags only.
register(MethodInfo("voco", "llm", trainable=True,
                    summary="K VoCo tokens after the image; text attends only to them (the mask)"))(None)
