"""What each compression method costs at inference, on one accounting for all of them.

Two numbers per method, because compression pays off in two different situations:

* `prefill_flops`: one new image and one question, nothing cached: compressor,
  projector and the LLM over the whole sequence (the vision tower is the same for
  every method and is reported once, separately, as `vision_flops`);
* `question_flops`: one more question about an image already seen: the question's
  tokens against the cached K/V of the method's visual tokens. This is where VoCo
  shines (its cache holds K tokens). A query-conditioned method (QueCC) cannot
  cache: its visual tokens depend on the question, so it pays compressor + LLM
  prefill again for every question.

Analytic counts follow the LLaMA stack layer by layer (projections, MLP, dense
attention over every key a layer holds, logits at every new position) so FastV's
per-layer token count fits the same formula; the measured count of the real
forward (`torch.utils.flop_counter`) is kept beside it, with the compressor's own
measured FLOPs, so the two can be checked against each other.
"""

from __future__ import annotations

import torch

from vocolab.core.layout import assemble
from vocolab.inference.flops import measured_flops, vision_flops
from vocolab.inference.latency import latency_ms
from vocolab.models.inputs import model_device

BYTES = {torch.float32: 4, torch.bfloat16: 2, torch.float16: 2}


def llm_flops(cfg, vocab: int, q_len: int, kv_per_layer: list[int]) -> int:
    """Forward FLOPs of `q_len` new tokens when layer l holds `kv_per_layer[l]` keys
    (the new tokens included): 2qd(2d + 2d_kv) + 6qd*ff + 4q*kv_l*d per layer, plus logits."""
    m = cfg.llm
    d, ff = m.hidden_size, m.intermediate_size
    d_kv = m.kv_heads * (d // m.heads)
    if len(kv_per_layer) != m.layers:
        raise ValueError(f"llm_flops: {len(kv_per_layer)} key counts for {m.layers} layers")
    dense = 2 * q_len * d * (2 * d + 2 * d_kv) + 6 * q_len * d * ff
    return sum(dense + 4 * q_len * kv * d for kv in kv_per_layer) + 2 * q_len * d * vocab


def projector_flops(cfg, tokens: int) -> int:
    d_v, d = cfg.vision.hidden_size, cfg.llm.hidden_size
    return tokens * (2 * d_v * d + 2 * d * d)


def kv_bytes(cfg, kv_per_layer: list[int], dtype=torch.float32) -> int:
    """Bytes of a K/V cache holding `kv_per_layer[l]` tokens in layer l."""
    m = cfg.llm
    width = m.kv_heads * (m.hidden_size // m.heads)
    return sum(2 * n * width * BYTES[dtype] for n in kv_per_layer)


def frame_costs(cfg, tokens_per_frame: int, frames: int) -> dict:
    """Cache bytes per frame (and for the whole clip) of a method that keeps
    `tokens_per_frame` tokens' K/V in every layer (`kv_bytes`, fp32)."""
    per_frame = kv_bytes(cfg, [tokens_per_frame] * cfg.llm.layers)
    return {"cached_tokens_per_frame": tokens_per_frame, "cache_bytes_per_frame": per_frame,
            "cache_bytes_clip": per_frame * frames}


def method_costs(model, method: str, features: torch.Tensor, question_ids: list[int], *, tokens: int,
                 voco_tokens: int = 0, fastv_layer: int | None = None, needs_query: bool = False,
                 extra_flops: int = 0, repeats: int = 10) -> dict:
    """Costs of one method for one image (`features` `[1, V, C]`) and one question.

    `model` is what answers (a `VoCoVLM`, with or without a compressor, or a FastV
    wrapper); `tokens` is the number of visual tokens the answer sees (K, or V for
    the upper bound); `voco_tokens` the VoCo slots in the sequence; `extra_flops` the
    measured cost of a compression step that runs outside the model (PruMerge).
    """
    cfg, vocab = model.cfg, model.vocab_size
    v, q = cfg.data.image_tokens, len(question_ids)
    layers = cfg.llm.layers
    voco = method == "voco"
    slots = v if voco or method in ("full", "fastv") else tokens
    mask = "voco" if voco else "causal"
    ids, layout = assemble(question_ids, [], model.special, image_tokens=slots, voco_tokens=voco_tokens,
                           add_eos=False)
    device = model_device(model)
    input_ids = torch.tensor([ids], device=device)
    features = features.to(device)

    def prefill():
        return model(input_ids, [layout], features=features, mask=mask).logits

    n = len(ids)
    compressor = getattr(model, "compressor", None)
    compressor_flops = extra_flops
    if compressor is not None:
        query = torch.zeros(1, cfg.llm.hidden_size, device=device) if needs_query else None
        compressor_flops = measured_flops(lambda: compressor(features, query=query))
    if method == "fastv":
        from vocolab.zoo.fastv import fastv_flops

        prefill_analytic = fastv_flops(cfg, vocab, n, v, tokens, fastv_layer)
        kept = n - q - (v - tokens)  # the prefix after pruning
        cached = [n - q] * fastv_layer + [kept] * (layers - fastv_layer)
    else:
        prefill_analytic = llm_flops(cfg, vocab, n, [n] * layers)
        cached = [tokens if voco else n - q] * layers
    prefill_analytic += projector_flops(cfg, slots) + compressor_flops
    if needs_query:  # nothing about the image can be cached but its features
        question_flops = prefill_analytic
    else:
        question_flops = llm_flops(cfg, vocab, q, [c + q for c in cached])
    measured = measured_flops(prefill) + extra_flops  # a compression step run outside the model
    vis = cfg.vision
    return {
        "visual_tokens": tokens,
        "sequence_tokens": n,
        "question_tokens": q,
        "prefill_flops": measured,
        "prefill_flops_analytic": int(prefill_analytic),
        "compressor_flops": compressor_flops,
        "question_flops": int(question_flops),
        "vision_flops": vision_flops(image_size=cfg.data.image_size, patch_size=cfg.data.patch_size,
                                     hidden=vis.hidden_size, layers=vis.layers,
                                     intermediate=vis.intermediate_size, out_hidden=0),
        "cached_tokens": None if needs_query else cached,
        "cache_bytes": None if needs_query else kv_bytes(cfg, cached),
        "latency_ms": latency_ms(prefill, repeats=repeats, warmup=2)["median"],
        "compressor_params": sum(p.numel() for p in compressor.parameters()) if compressor is not None else 0,
    }


__all__ = ["frame_costs", "kv_bytes", "llm_flops", "method_costs", "projector_flops"]
