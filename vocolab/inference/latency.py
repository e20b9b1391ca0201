"""Inference cost accounting: FLOPs (measured and analytic), latency, cache bytes.

Table 7 of VoCo-LLaMA in miniature (`inference_costs`): the same image and question,
answered (first token) three ways:

* no caching   - one forward over `[BOS][IMG x V][VOCO x K][question]`, vision tower included;
* full caching - the prefix's K/V (BOS + V image tokens + K VoCo tokens, every layer)
                 was computed once; answering runs only the question against it;
* VoCo caching - only the K VoCo tokens' K/V is kept; answering runs the question
                 against those.

Counting FLOPs. `measured_flops` uses `torch.utils.flop_counter.FlopCounterMode`,
which counts matrix multiplies (mm, addmm, bmm, convolution) and the *GPU* SDPA
kernels, but has no formula for the kernel CPU SDPA dispatches to
(`aten._scaled_dot_product_flash_attention_for_cpu`): attention would silently count
as zero. vocolab registers a formula for it (QK^T + AV = 4 * B * H * Q * KV * D,
the same as the GPU kernels' formula and as eager attention's two matmuls), so the
count is the same whichever backend runs; a test checks sdpa == eager. Elementwise
work (norms, softmax, RoPE, activations) is not counted, as usual. Masked-out pairs
are counted: dense kernels compute them too.

TODO-DOC (from flops)
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def latency_ms(fn: Callable[[], object], repeats: int = 20, warmup: int = 3,
               device: torch.device | str | None = None) -> dict:
    """Wall time of `fn()` in ms: median, p10, p90 over `repeats` runs after `warmup` runs,
    under `torch.no_grad`. CUDA is synchronised around each run when `device` is CUDA
    (default: whenever CUDA is initialised)."""
    return latencies_ms({"fn": fn}, repeats, warmup, device)["fn"]


def latencies_ms(fns: dict[str, Callable[[], object]], repeats: int = 20, warmup: int = 3,
                 device: torch.device | str | None = None) -> dict[str, dict]:
    """`latency_ms` for several functions, run round-robin (one run of each per repeat), so
    that a change in machine load during the measurement affects all of them alike."""
    if repeats < 1 or warmup < 0:
        raise ValueError("latency_ms: repeats >= 1 and warmup >= 0 required")
    cuda = (torch.device(device).type == "cuda") if device is not None else \
        (torch.cuda.is_available() and torch.cuda.is_initialized())

    def sync():
        if cuda:
            torch.cuda.synchronize()

    times: dict[str, list[float]] = {name: [] for name in fns}
    with torch.no_grad():
        for i in range(warmup + repeats):
            for name, fn in fns.items():
                sync()
                start = time.perf_counter()
                fn()
                sync()
                if i >= warmup:
                    times[name].append((time.perf_counter() - start) * 1e3)
    return {name: _summary(t, repeats) for name, t in times.items()}


def _summary(times: list[float], repeats: int) -> dict:
    times = sorted(times)

    def pct(q):
        return times[min(len(times) - 1, max(0, round(q * (len(times) - 1))))]

    return {"median": statistics.median(times), "p10": pct(0.1), "p90": pct(0.9), "repeats": repeats}


__all__ = ["latencies_ms", "latency_ms"]
