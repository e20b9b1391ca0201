"""Analytic FLOPs of VideoLLM-MoD: a MoD layer costs a plain layer at
`n_hat = n - frames * (V - k)` tokens (projections, MLP, attention n_hat x n_hat), plus
the router (`2 n d`, scored at every position, learned routing only); the LM head runs at
every position. With `training=True`, forward + backward as `FlopCounterMode` counts them
(linear layers 3x the forward: dX and dW; fused SDPA attention 3.5x), which
`inference.flops.measured_training_flops` measures.
"""

from __future__ import annotations

from typing import Sequence

from vocolab.zoo.mod_config import mod_layer_indices, selected_per_frame


def mod_flops(cfg, vocab: int, seq_len: int, frames: int, image_tokens: int, k: int,
              mod_layers: Sequence[int], *, router: bool = True, training: bool = False) -> int:
    """Analytic FLOPs of one MoD forward (batch 1, no padding, LLM only, no projector).

    Plain layers run on `seq_len` tokens, MoD layers on `n_hat = seq_len - frames *
    (image_tokens - k)` (projections, MLP, attention n_hat x n_hat as `analytic_flops`
    counts them), the LM head on every position, and with `router` a `Linear(d, 1)` over
    every position per MoD layer. With `training`: forward + backward as `FlopCounterMode`
    counts them: matmuls 3x the forward (dX and dW; the inputs must require grad, as with
    a trainable embedding table), attention through a fused SDPA kernel 3.5x.
    """
    m = cfg.llm
    if not 0 <= k <= image_tokens:
        raise ValueError(f"mod_flops: need 0 <= k ({k}) <= image_tokens ({image_tokens})")
    n_hat = seq_len - frames * (image_tokens - k)
    if n_hat < 1 or frames < 0:
        raise ValueError(f"mod_flops: {frames} frames of {image_tokens} tokens do not fit {seq_len} tokens")
    bad = [i for i in mod_layers if not 0 <= i < m.layers]
    if bad:
        raise ValueError(f"mod_flops: layers {bad} outside 0..{m.layers - 1}")
    d, ff = m.hidden_size, m.intermediate_size
    d_kv = m.kv_heads * (d // m.heads)
    linear = attention = 0
    for i in range(m.layers):
        x = n_hat if i in mod_layers else seq_len
        linear += 2 * x * d * (2 * d + 2 * d_kv) + 6 * x * d * ff
        attention += 4 * x * x * d
    linear += 2 * seq_len * d * vocab
    if router:
        linear += len(set(mod_layers)) * 2 * seq_len * d
    if training:
        return int(3 * linear + 3.5 * attention)
    return int(linear + attention)


def mod_flops_ratio(cfg, vocab: int, seq_len: int, frames: int, image_tokens: int, r: float = 0.2,
                    layers: str | Sequence[int] = "interleaved", *, router: bool = True,
                    training: bool = False) -> float:
    """MoD FLOPs over the plain model's for the same input (the paper's 'x training FLOPs')."""
    k = selected_per_frame(r, image_tokens)
    idx = mod_layer_indices(cfg.llm.layers, layers)
    full = mod_flops(cfg, vocab, seq_len, frames, image_tokens, image_tokens, (), router=False, training=training)
    return mod_flops(cfg, vocab, seq_len, frames, image_tokens, k, idx, router=router, training=training) / full


__all__ = ["mod_flops", "mod_flops_ratio"]
