"""Importing this module registers every built-in method.

The compressors before the LLM register themselves in their own files. The methods that
act inside the LLM are registered here by their tags only: VoCo is a mask
(`vocolab.core.masks`) and FastV a wrapper around a trained model (`vocolab.zoo.fastv`);
neither builds a `Compressor`, and registering FastV here keeps the registry free of
model imports (the VLM asks the registry for its compressor)."""

from vocolab.zoo import dropping, perceiver, pooling, prumerge, qformer, quecc  # noqa: F401
from vocolab.zoo.registry import MethodInfo, register

register(MethodInfo("voco", "llm", trainable=True,
                    summary="K VoCo tokens after the image; text attends only to them (the mask)"))(None)
register(MethodInfo(
    "fastv", "llm", trainable=False, needs_attention=True,
    summary="FastV: after layer K, drop all but the top-R image tokens by received attention "
            "(training-free, causal upper-bound model)"))(None)
