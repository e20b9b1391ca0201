"""The compression zoo: pooling, learned queries, token dropping and in-LLM methods
(FastV in `zoo.fastv`, VideoLLM-MoD in `zoo.mod`) behind one registry
(`vocolab.zoo.registry`). Importing the package registers every built-in method."""

from vocolab.zoo import builtin  # noqa: F401  (registers the built-in methods)
from vocolab.zoo.registry import Compressor, MethodInfo, build_compressor, method_info, methods, register

__all__ = ["Compressor", "MethodInfo", "build_compressor", "method_info", "methods", "register"]
