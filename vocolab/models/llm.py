"""The language model: a mini LLaMA built from a `LlamaConfig` (nothing downloaded).

The attention backend is fixed here from `cfg.llm.attn_implementation`; `VoCoVLM` refuses any backend that
would ignore its custom masks; `sdpa_frames` (`models.frame_attention`) is registered with `transformers` when
this module is imported. Input and output embeddings are tied, which at this scale saves a noticeable share of
the parameters.
"""

from __future__ import annotations

from transformers import LlamaConfig, LlamaForCausalLM

from vocolab.core.config import Config
from vocolab.core.layout import SpecialIds
from vocolab.models import frame_attention  # noqa: F401  (registers the `sdpa_frames` backend)


def llama_config(cfg: Config, vocab_size: int, special: SpecialIds) -> LlamaConfig:
    """`LlamaConfig` from `cfg.llm`; RoPE goes through v5's `rope_parameters` field."""
    ids = (special.bos, special.eos, special.pad, special.image, special.voco)
    if any(not 0 <= i < vocab_size for i in ids):
        raise ValueError(f"llama_config: special ids {special} do not fit a vocab of {vocab_size}")
    m = cfg.llm
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=m.hidden_size,
        intermediate_size=m.intermediate_size,
        num_hidden_layers=m.layers,
        num_attention_heads=m.heads,
        num_key_value_heads=m.kv_heads,
        max_position_embeddings=m.max_positions,
        rope_parameters={"rope_type": "default", "rope_theta": float(m.rope_theta)},
        bos_token_id=special.bos,
        eos_token_id=special.eos,
        pad_token_id=special.pad,
        tie_word_embeddings=True,
        initializer_range=m.init_std,
        attn_implementation=m.attn_implementation,
    )


def build_llm(cfg: Config, vocab_size: int, special: SpecialIds) -> LlamaForCausalLM:
    """A freshly initialised mini LLaMA (seed the RNG beforehand for a reproducible init)."""
    return LlamaForCausalLM(llama_config(cfg, vocab_size, special))


__all__ = ["build_llm", "llama_config"]
