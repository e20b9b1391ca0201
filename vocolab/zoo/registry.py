"""The compression zoo's registry: every way of cutting visual cost, by name.

A method is one small file that builds a `Compressor` and registers it with
`@register(MethodInfo(...))`. The tags say what a method needs, so the sweep can
treat methods fairly without knowing them: trainable methods are fine-tuned from
the upper-bound model with the same data, seed, steps and schedule; training-free
ones are evaluated on the upper-bound model itself.

Two places a method can act:

* `pre`: before the LLM, mapping the V patch features of an image (and for
  query-conditioned methods the question) to K tokens that take the image's
  place in the sequence (`Compressor.forward`);
* `llm`: inside the LLM (VoCo's mask, FastV's token dropping); these are not
  `Compressor`s and are handled by their own modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from vocolab.core.config import Config

WHERE = ("pre", "llm")


@dataclass(frozen=True)
class MethodInfo:
    name: str
    where: str  # "pre" or "llm"
    trainable: bool
    needs_query: bool = False  # reads the question: a compression cannot be shared between questions
    needs_attention: bool = False  # reads attention weights (vision CLS attention or LLM attention)
    adaptive: bool = False  # chooses K per image itself (reported as measured)
    # its K tokens are K of the image's patches, unchanged (`choose` says which): they keep
    # their patches' learned image positions (`models.projector`)
    keeps_patches: bool = False
    summary: str = ""

    def __post_init__(self) -> None:
        if self.where not in WHERE:
            raise ValueError(f"method {self.name!r}: where={self.where!r} is not one of {WHERE}")


class Compressor(nn.Module):
    """Patch features of one image -> K tokens in the same feature space.

    `forward(features, query=None, extras=None)`:

    * `features`: `[N, V, C]` frozen CLIP patch features (C = Dv, or len(vision_layers) x Dv
      when the method asks for several vision layers, concatenated on the channel axis);
    * `query`: `[N, D_llm]` mean LLM input embedding of each image's question tokens, given
      (and required) only when `info.needs_query`;
    * `extras`: method-specific inputs named by the method (e.g. PruMerge's CLS attention).

    Returns `[N, K, Dv]`, or for adaptive methods a list of N tensors `[K_i, Dv]`. The
    output goes through the VLM's projector exactly like uncompressed patch features.
    """

    info: MethodInfo
    vision_layers: tuple[int, ...] | None = None  # hidden-state indices; None = cfg.vision.feature_layer

    def __init__(self, cfg, k: int):
        super().__init__()
        v = cfg.data.image_tokens
        if not 1 <= k <= v:
            raise ValueError(f"{self.info.name}: K={k} tokens for {v} patch tokens; need 1 <= K <= V")
        self.k, self.patches = k, v
        self.dim = cfg.vision.hidden_size


_BUILDERS: dict[str, Callable] = {}

_INFO: dict[str, MethodInfo] = {}


def register(info: MethodInfo):
    """Class or builder decorator: `build_compressor(info.name, cfg, k)` will call it."""

    def wrap(builder):
        if info.name in _INFO:
            raise ValueError(f"register: method {info.name!r} is already registered")
        _INFO[info.name] = info
        _BUILDERS[info.name] = builder
        if isinstance(builder, type):
            builder.info = info
        return builder

    return wrap


def methods() -> dict[str, MethodInfo]:
    """Every registered method's tags, by name."""
    return dict(_INFO)


def method_info(name: str) -> MethodInfo:
    if name not in _INFO:
        raise ValueError(f"compression method {name!r} is not registered; choose one of {sorted(_INFO)}")
    return _INFO[name]


def build_compressor(name: str, cfg, k: int) -> Compressor:
    """A fresh compressor of the named `pre` method for K output tokens."""
    info = method_info(name)
    if info.where != "pre":
        raise ValueError(f"method {name!r} acts inside the LLM; it has no compressor module")
    return _BUILDERS[name](cfg, k)


def pre_llm(name: str) -> bool:
    return method_info(name).where == "pre"


def check_compressor_config(cfg: Config) -> None:
    """Fail early (naming the field) on a `compress.method` no compressor can meet: an
    unknown method, or one that acts inside the LLM or picks its own K (the config checks
    K itself)."""

    try:
        info = method_info(cfg.compress.method)
    except ValueError as err:
        raise ValueError(f"compress.method: {err}") from err
    if info.where != "pre" or info.adaptive:
        raise ValueError(f"compress.method: {info.name!r} is not a fixed-K compressor before the LLM "
                         f"(in-LLM and adaptive methods are evaluated by `vocolab.zoo`, not configured here)")


__all__ = ["Compressor", "MethodInfo", "WHERE", "build_compressor", "method_info", "methods", "pre_llm", "register"]
