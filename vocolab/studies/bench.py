"""`vocolab bench`: how fast each training stage and the evaluation run on this machine.

For every stage of the recipe (clip, pretrain, upper, voco) a fresh module trains `steps`
steps (after `warmup` untimed ones) with the same Trainer, data and precision as the real
recipe; the weights are untrained, which does not change what a step costs. Per stage:
median step time (forward, backward, optimiser), throughput in real tokens per second
(loading the next batch included), the analytic training FLOPs per step
(`inference.flops.training_flops`) and the model FLOPs utilisation they give against the
device's peak, and peak memory. Evaluation: held-out questions answered per second, by
full forwards (the upper bound) and from VoCo caches.

The peak is the device's published dense bf16 figure for the GPUs in `GPU_PEAK`, else the
throughput of a large matrix product measured on the spot (the only honest peak for a
CPU), named in the results so that an MFU is never read without its denominator.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
from lightning import seed_everything

from vocolab.core.config import Config
from vocolab.core.runtime import device, quick_mode
from vocolab.studies.quickstart import job_config

STAGES = ("clip", "pretrain", "upper", "voco")
# dense bf16 tensor-core FLOP/s as published (no sparsity), matched on the CUDA device name
GPU_PEAK = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12,
            "RTX 4090": 165e12, "T4": 65e12, "V100": 125e12}


def measured_peak(dev: torch.device, dtype: torch.dtype = torch.float32, size: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of a `size` x `size` matrix product in `dtype` on `dev`, best of `repeats`."""
    a = torch.randn(size, size, device=dev, dtype=dtype)
    b = torch.randn(size, size, device=dev, dtype=dtype)
    best = float("inf")
    for _ in range(repeats + 2):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        start = time.perf_counter()
        a @ b
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def device_peak(dev: torch.device) -> tuple[float, str]:
    """(peak FLOP/s, where it comes from) for `dev`."""
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
        for key, peak in GPU_PEAK.items():
            if key in name:
                return peak, f"{name}: published dense bf16 peak"
        return measured_peak(dev, torch.bfloat16), f"{name}: measured bf16 matrix product (2048^3)"
    return measured_peak(dev), "CPU: measured fp32 matrix product (2048^3), all threads"


def _module(stage: str, cfg: Config, data, teacher=None):
    from vocolab.training.modules import ClipModule
    from vocolab.training.recipe import stage_module

    if stage == "clip":
        data.set_task("clip")
        data.batch_size = cfg.train.clip_batch_size
        return ClipModule(cfg, tokenizer=data.tokenizer)
    data.set_task("caption" if stage == "pretrain" else "qa", voco_tokens=cfg.voco.tokens,
                  image_slots=cfg.image_slots)
    data.batch_size = cfg.train.batch_size
    mask = "voco" if stage == "voco" else "causal"
    module = stage_module(cfg, stage, mask, 1000, teacher if stage == "voco" else None, tokenizer=data.tokenizer)
    if stage == "voco" and teacher is not None:  # as in the recipe: the student starts from its teacher
        module.model.load_backbone(teacher.state_dict())
    return module


def bench_stage(stage: str, cfg: Config, data, runs: Path, steps: int, warmup: int, peak: float,
                teacher=None, progress: bool = False) -> dict:
    """Train `warmup + steps` steps of `stage` and summarise the timed ones."""
    from vocolab.inference.flops import training_flops
    from vocolab.training.measure import StepStats
    from vocolab.training.recipe import fit

    seed_everything(cfg.seed, verbose=False)
    module = _module(stage, cfg, data, teacher)
    vocab = len(data.tokenizer)
    distilled = stage == "voco" and getattr(module, "needs_teacher", False)
    stats = StepStats(flops=lambda batch: training_flops(cfg, vocab, batch, teacher=distilled))
    fit(module, data, cfg, runs, f"bench-{stage}", warmup + steps, progress=progress, checkpoint=False,
        callbacks=[stats])
    times, intervals = stats.times[warmup:], stats.intervals[max(0, warmup - 1):]
    tokens, flops = stats.tokens[warmup:], stats.flops[warmup:]
    step_s = statistics.median(times)
    return {"stage": stage, "steps": len(times), "batch": data.batch_size,
            "step_ms": round(1e3 * step_s, 2), "interval_ms": round(1e3 * statistics.median(intervals), 2),
            "tokens_per_step": round(statistics.mean(tokens), 1),
            "tokens_per_s": round(sum(tokens) / sum(intervals[-len(tokens):]), 1),
            "flops_per_step": int(statistics.mean(flops)), "mfu": statistics.mean(flops) / step_s / peak,
            "peak_mem_bytes": stats.peak_cuda, "rss_delta_kib": stats.rss_delta_kib}


def bench_eval(cfg: Config, data, model, questions: int) -> list[dict]:
    """Held-out questions answered per second: full forwards (causal) and VoCo caches."""
    from vocolab.evaluation.heldout import Questions, predict

    qs = Questions.of(data.splits["heldout"], questions)
    model = model.to(device()).eval()
    rows = []
    for mask, name in (("causal", "eval-full"), ("voco", "eval-voco-cache")):
        predict(model, data.tokenizer, data.splits["heldout"].images, Questions.of(data.splits["heldout"], 8),
                mask, cfg.voco.tokens, progress=False)  # warm-up
        start = time.perf_counter()
        predict(model, data.tokenizer, data.splits["heldout"].images, qs, mask, cfg.voco.tokens, progress=False)
        seconds = time.perf_counter() - start
        rows.append({"stage": name, "questions": len(qs), "seconds": round(seconds, 3),
                     "questions_per_s": round(len(qs) / seconds, 1)})
    return rows


def run_bench(preset_name: str = "nano", out: str | Path = "figures/bench", *, seed: int = 0, steps: int | None = None,
              warmup: int = 5, questions: int | None = None, stages=STAGES, overrides: dict | None = None,
              command: str = "vocolab bench", progress: bool = False) -> dict:
    """Measure every stage and the evaluation; write results.json and table.md to `out`."""
    from vocolab.core.outputs import staged_output
    from vocolab.data.module import VoCoDataModule
    from vocolab.data.storage import cache_root
    from vocolab.reporting.bench import bench_markdown
    from vocolab.reporting.provenance import provenance
    from vocolab.reporting.results import write_report
    from vocolab.training.trainer import precision

    start = time.perf_counter()
    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise ValueError(f"bench: unknown stage(s) {bad}; choose from {STAGES}")
    cfg = job_config(preset_name, seed, overrides)
    steps = steps if steps is not None else (3 if quick_mode() else 20)
    warmup = min(warmup, 1) if quick_mode() else warmup
    questions = questions if questions is not None else (20 if quick_mode() else 500)
    dev = device()
    peak, peak_source = device_peak(dev)
    data = VoCoDataModule(cfg, turns=cfg.train.turns, progress=progress)
    data.setup()
    runs = cache_root() / "runs" / f"bench-{cfg.preset}"
    rows, teacher = [], None
    for stage in stages:
        if stage == "voco" and teacher is None:
            teacher = _module("upper", cfg, data).model  # any VoCoVLM of the config times the same
        rows.append(bench_stage(stage, cfg, data, runs, steps, warmup, peak, teacher, progress))
        print(f"bench: {stage}: {rows[-1]['step_ms']:.1f} ms/step, {rows[-1]['tokens_per_s']:.0f} tokens/s, "
              f"MFU {100 * rows[-1]['mfu']:.2f}%")
    model = teacher if teacher is not None else _module("upper", cfg, data).model
    rows += bench_eval(cfg, data, model, questions)
    body = {"provenance": provenance(command, cfg.preset, seed, time.perf_counter() - start, out),
            "bench": {"device": str(dev), "precision": precision(cfg), "threads": torch.get_num_threads(),
                      "peak_flops": peak, "peak_source": peak_source, "steps": steps, "warmup": warmup,
                      "note": "step_ms: forward + backward + optimiser (median); tokens_per_s: real tokens over "
                              "the time between batch ends (loading included); mfu: analytic training FLOPs per "
                              "step / step time / peak"},
            "runs": rows, "config": cfg.to_dict()}
    with staged_output(out) as stage:
        write_report(stage, body, bench_markdown(body), {})
    return body


__all__ = ["GPU_PEAK", "STAGES", "bench_eval", "bench_stage", "device_peak", "measured_peak", "run_bench"]
