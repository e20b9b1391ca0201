"""The compression zoo: pooling, learned queries, token dropping and in-LLM methods
behind one registry (`vocolab.zoo.registry`)."""

from .registry import Compressor, MethodInfo, build_compressor, method_info, methods, pre_llm, register

__all__ = ["Compressor", "MethodInfo", "build_compressor", "method_info", "methods", "pre_llm", "register"]
