"""Table 7 of VoCo-LLaMA in miniature (`inference_costs`): the same image and question,
answered (first token) three ways:

* no caching   - one forward over `[BOS][IMG x V][VOCO x K][question]`, vision tower included;
* full caching - the prefix's K/V (BOS + V image tokens + K VoCo tokens, every layer)
                 was computed once; answering runs only the question against it;
* VoCo caching - only the K VoCo tokens' K/V is kept; answering runs the question
                 against those.

Per setting: measured and analytic FLOPs, median latency, cache bytes and (on CUDA)
peak memory, and the reductions against no caching.
"""

from __future__ import annotations

import torch

from vocolab.core.layout import assemble
from vocolab.inference.answering import text_mask
from vocolab.inference.cache import VoCoCache
from vocolab.inference.compression import full_cache
from vocolab.inference.flops import analytic_flops, measured_flops
from vocolab.inference.latency import latencies_ms
from vocolab.models.inputs import model_device


@torch.no_grad()
def inference_costs(model, pixels, question_ids: list[int], k: int | None = None, *,
                    repeats: int = 20, warmup: int = 3) -> dict:
    """Table 7 in miniature for one image `pixels` `[1, H, W, 3]` and one question.

    Each setting answers the question's first answer token (one forward). Per setting:
    `flops` (measured), `flops_analytic`, `latency_ms` {median, p10, p90}, `cached_tokens`,
    `cache_bytes` (from the actual K/V tensors: layers x 2 x kv_heads*head_dim x bytes x
    tokens), `peak_mem_bytes` (CUDA only, else None), and reductions relative to no
    caching (`*_reduction`, a fraction). The cached settings also report the one-off
    `precompute_flops` of building their cache. The timed answering of the cached
    settings includes copying the cache into a fresh `DynamicCache` (decoding appends to
    it), a cost proportional to the cache size.
    """
    if pixels.shape[0] != 1 or pixels.dim() != 4:
        raise ValueError(f"inference_costs: expected one image [1, H, W, 3], got {tuple(pixels.shape)}")
    if not question_ids:
        raise ValueError("inference_costs: the question needs at least one token")
    cfg = model.cfg
    k = cfg.voco.tokens if k is None else k
    v = cfg.data.image_tokens
    vocab = model.vocab_size
    device = model_device(model)
    pixels = pixels.to(device)
    q = len(question_ids)

    tokens, layout = assemble(question_ids, [], model.special, image_tokens=v, voco_tokens=k, add_eos=False)
    full_ids = torch.tensor([tokens], device=device)
    question = torch.tensor([question_ids], device=device)

    def no_caching():
        return model(full_ids, [layout], pixels=pixels, mask="voco").logits[:, -1].argmax(-1)

    # one prefix forward gives both caches: every token's K/V, and the VoCo subset
    full, _ = full_cache(model, pixels, k)
    voco_idx = torch.arange(1 + v, 1 + v + k, device=device)
    voco = VoCoCache([t.index_select(2, voco_idx) for t in full.keys],
                     [t.index_select(2, voco_idx) for t in full.values],
                     full.positions[1 + v:], full.next_position, k=k)

    def against(cache: VoCoCache):
        pos = (cache.next_position + torch.arange(q, device=device))[None]
        mask = text_mask(cache.tokens, torch.zeros(1, 0, dtype=torch.bool, device=device),
                         torch.ones(1, q, dtype=torch.bool, device=device))

        def run():
            return model(question, mask=mask, position_ids=pos,
                         past_key_values=cache.to_dynamic_cache()).logits[:, -1].argmax(-1)
        return run

    def precompute():
        full_cache(model, pixels, k)

    m = cfg.llm
    sizes = dict(layers=m.layers, hidden=m.hidden_size, intermediate=m.intermediate_size, heads=m.heads,
                 kv_heads=m.kv_heads, vocab=vocab)
    vision = dict(image_size=cfg.data.image_size, patch_size=cfg.data.patch_size,
                  hidden=cfg.vision.hidden_size, layers=cfg.vision.layers,
                  intermediate=cfg.vision.intermediate_size)
    prefix_len = 1 + v + k
    precompute_measured = measured_flops(precompute)
    precompute_analytic = analytic_flops(**sizes, q_len=prefix_len, kv_len=prefix_len, vision=vision)

    settings = {
        "no_caching": (no_caching, None,
                       analytic_flops(**sizes, q_len=prefix_len + q, kv_len=prefix_len + q, vision=vision)),
        "full_caching": (against(full), full, analytic_flops(**sizes, q_len=q, kv_len=full.tokens + q)),
        "voco_caching": (against(voco), voco, analytic_flops(**sizes, q_len=q, kv_len=voco.tokens + q)),
    }
    timings = latencies_ms({name: fn for name, (fn, _, _) in settings.items()}, repeats, warmup, device)
    out = {}
    for name, (fn, cache, analytic) in settings.items():
        peak = None
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(device)
            fn()
            torch.cuda.synchronize()
            peak = int(torch.cuda.max_memory_allocated(device))
        row = {
            "cached_tokens": 0 if cache is None else cache.tokens,
            "cache_bytes": 0 if cache is None else cache.nbytes,
            "flops": measured_flops(fn),
            "flops_analytic": int(analytic),
            "latency_ms": timings[name],
            "peak_mem_bytes": peak,
        }
        if cache is not None:
            row["precompute_flops"] = precompute_measured
            row["precompute_flops_analytic"] = int(precompute_analytic)
        out[name] = row
    base = out["no_caching"]
    for row in out.values():
        row["flops_reduction"] = 1 - row["flops"] / base["flops"]
        row["latency_reduction"] = 1 - row["latency_ms"]["median"] / base["latency_ms"]["median"]
    voco, full = out["voco_caching"], out["full_caching"]
    voco["cache_bytes_reduction"] = 1 - voco["cache_bytes"] / full["cache_bytes"]
    return {
        "settings": out,
        "image_tokens": v,
        "voco_tokens": k,
        "question_tokens": q,
        "answer_tokens": 1,
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "attn_implementation": model.attn_implementation,
        "flop_counting": "torch FlopCounterMode (matmuls, conv, attention; CPU SDPA via a registered "
                         "formula); analytic = LLaMA stack (+ CLIP tower and projector for no_caching)",
        "latency": f"median of {repeats} runs after {warmup} warm-up runs, the three settings "
                   f"interleaved, torch.no_grad",
    }


__all__ = ["inference_costs"]
