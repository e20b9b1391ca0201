"""What a training step costs, measured while training: the wall time of every step (CUDA
synchronised), peak memory over the fit, and the bytes of activations autograd keeps for
backward (comparable on any device, unlike the CPU's max-RSS high-water mark).
"""

from __future__ import annotations

import resource
import statistics
import time

import lightning as L
import torch


class StepStats(L.Callback):
    """Wall time of every training step (CUDA synchronised) and peak memory of the fit.

    `times` spans forward, backward and the optimiser step of each batch; `intervals` the
    time between the ends of two batches, which adds loading and collating the next one
    (what throughput sees). `tokens` counts each batch's real (unpadded) tokens and, with a
    `flops(batch)` function, `flops` its analytic training FLOPs."""

    def __init__(self, flops=None):
        self.times: list[float] = []
        self.intervals: list[float] = []
        self.tokens: list[int] = []
        self.flops: list[int] = []
        self.count_flops = flops
        self.peak_cuda: int | None = None
        self.rss_delta_kib: int | None = None
        self._t0 = 0.0
        self._last_end: float | None = None
        self._rss0 = 0

    @staticmethod
    def _sync(module):
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    def on_train_start(self, trainer, module):
        if module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(module.device)
        self._rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self._sync(module)
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self._sync(module)
        end = time.perf_counter()
        self.times.append(end - self._t0)
        if self._last_end is not None:
            self.intervals.append(end - self._last_end)
        self._last_end = end
        self.tokens.append(batch_tokens(batch))
        if self.count_flops is not None:
            self.flops.append(int(self.count_flops(batch)))

    def on_train_end(self, trainer, module):
        if module.device.type == "cuda":
            self.peak_cuda = int(torch.cuda.max_memory_allocated(module.device))
        self.rss_delta_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self._rss0

    def median_ms(self) -> float | None:
        times = self.times[1:] if len(self.times) > 1 else self.times
        return round(1e3 * statistics.median(times), 3) if times else None


def batch_tokens(batch) -> int:
    """Real tokens of a batch: unpadded sequence lengths (a `Batch`), or the attended caption
    tokens plus one image each (the CLIP stage's dict)."""
    if hasattr(batch, "layouts"):
        return sum(layout.length for layout in batch.layouts)
    return int(batch["attention_mask"].sum()) + len(batch["input_ids"])


def saved_activation_bytes(model, step) -> int:
    """Bytes of the tensors autograd saves for backward while `step()` runs the forward
    (parameters excluded, each storage counted once)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return int(sum(seen.values()))


__all__ = ["StepStats", "batch_tokens", "saved_activation_bytes"]
