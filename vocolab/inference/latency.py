"""Wall-clock latency, measured fairly: a median over repeats after warm-up, several
settings interleaved so that a change in machine load hits all of them alike, and CUDA
synchronised around each run.
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
