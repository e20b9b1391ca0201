"""`run_mod_study`: VideoLLM-MoD on clip QA, against full computation, same steps and seed.

Every variant starts from the same upper-bound model (the sweep's base model, trained
once per preset and seed on scenes) and is fine-tuned on clip QA (`VoCoDataModule`
kind="clips", causal mask) for the same steps with the same data order:

* `full`    - every layer computes every token (a plain `VLMModule`);
* `learned` - MoD, top-k vision tokens per frame by a learned router, gated output;
* `random`  - MoD, k random vision tokens per frame (seeded);
* `uniform` - MoD, k spatially even vision tokens per frame.

Reported per variant: held-out accuracy per family; training cost: median step time
(wall clock per optimiser step, the first step excluded as warm-up), peak memory
(CUDA `max_memory_allocated` over the fit on a GPU; on CPU the process's max-RSS
growth during the fit, a high-water mark that only grows across cells, so it is
recorded but not comparable between cells), the bytes of activations autograd saves
for one training batch (`saved_activation_bytes`, comparable on any device), and the
training FLOPs of one step (forward + backward, `FlopCounterMode`) on the same fixed
batch; inference cost for one clip and question: prefill FLOPs (measured and
`mod_flops`) and the K/V cache (tokens summed over layers, bytes).
Resumable like the other studies (`vocolab.cells`).

TODO-DOC (from mod_study)
"""

from __future__ import annotations

import resource
import statistics
import time

import lightning as L
import torch


class StepStats(L.Callback):
    """Wall time of every training step (CUDA synchronised) and peak memory of the fit."""

    def __init__(self):
        self.times: list[float] = []
        self.peak_cuda: int | None = None
        self.rss_delta_kib: int | None = None
        self._t0 = 0.0
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
        self.times.append(time.perf_counter() - self._t0)

    def on_train_end(self, trainer, module):
        if module.device.type == "cuda":
            self.peak_cuda = int(torch.cuda.max_memory_allocated(module.device))
        self.rss_delta_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self._rss0

    def median_ms(self) -> float | None:
        times = self.times[1:] if len(self.times) > 1 else self.times
        return round(1e3 * statistics.median(times), 3) if times else None


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


__all__ = ["StepStats", "saved_activation_bytes"]
