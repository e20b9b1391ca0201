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
"""

from __future__ import annotations

import resource
import statistics
import time
from pathlib import Path

import lightning as L
import torch

from .cells import key_of, model_id, run_cells
from .config import quick_mode
from .sweep import QUICK, SWEEP_STEPS, base_model, runs_dir, study_config

VARIANTS = ("full", "learned", "random", "uniform")
QUICK_CLIPS = {"data.train_clips": 48, "data.heldout_clips": 12}


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


def clip_families(split) -> list[str]:
    from .data import TEMPORAL_FAMILIES

    found = sorted({f for fams in split.families for f in fams})
    return list(dict.fromkeys([f for f in TEMPORAL_FAMILIES if f in found] + found))


def run_mod_study(preset_name: str = "nano", out: str | Path = "figures/mod", *, seed: int = 0, r: float = 0.2,
                  layers: str = "interleaved", variants=VARIANTS, steps: int | None = None,
                  limit: int | None = None, overrides: dict | None = None, command: str = "vocolab mod",
                  progress: bool = True) -> dict:
    """Train and evaluate every variant on clip QA; write results.json, table.md and a figure."""
    from .data.module import VoCoDataModule
    from .evaluate import Questions, blind_run, model_run
    from .layout import assemble
    from .mod import MoDConfig, MoDModule, mod_layer_indices, selected_per_frame
    from .report import results
    from .runtime import provenance

    start = time.perf_counter()
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise ValueError(f"mod study: unknown variant(s) {bad}; choose from {VARIANTS}")
    MoDConfig(r=r, layers=layers)  # bad r / layers fail before anything runs
    base_cfg = study_config(preset_name, seed, overrides, QUICK)  # the sweep's: its base model is shared
    quick_clips = {k: v for k, v in QUICK_CLIPS.items() if k not in (overrides or {})}
    cfg = base_cfg.override(**quick_clips) if quick_mode() else base_cfg
    mod_layers = mod_layer_indices(cfg.llm.layers, layers)
    k = selected_per_frame(r, cfg.image_slots)
    steps = steps if steps is not None else (5 if quick_mode() else SWEEP_STEPS)
    out, runs = Path(out), runs_dir(base_cfg)
    upper = base_model(base_cfg, runs, VoCoDataModule(base_cfg, turns=base_cfg.train.turns, progress=progress),
                       progress)
    data = VoCoDataModule(cfg, kind="clips", turns=cfg.train.turns, progress=progress)
    data.setup()
    heldout, tok = data.splits["heldout"], data.tokenizer
    families = clip_families(heldout)
    qs = Questions.of(heldout, limit)
    voco_k = cfg.voco.tokens
    bounds = [model_run(upper, tok, heldout, qs, families, name="base", method="full", mask="causal", k=voco_k,
                        progress=progress),
              blind_run(data.splits["train"], qs, families)]
    base_id = model_id(upper)

    # one clip and question for the inference costs
    q_ids = tok(qs.questions[0], add_special_tokens=False)["input_ids"]
    ids, layout = assemble(q_ids, [], upper.special, frames=cfg.data.frames, image_tokens=cfg.image_slots,
                           voco_tokens=voco_k, add_eos=False)

    def costs(model, variant: str) -> dict:
        from .flops import measured_flops
        from .mod import measured_training_flops, mod_flops
        from .zoo.costs import kv_bytes

        model.zero_grad(set_to_none=True)
        train_split = data.splits["train"]
        pairs = train_split.examples("qa", data.turns)[: cfg.train.batch_size]
        batch = data.collate(train_split, pairs)

        def step():
            model(batch.input_ids, batch.layouts, pixels=batch.pixels, features=batch.features, mask="causal",
                  labels=batch.labels).loss.backward()

        reseed = getattr(model, "reseed", lambda: None)
        reseed()
        train_flops = measured_training_flops(step)
        model.zero_grad(set_to_none=True)
        reseed()
        saved = saved_activation_bytes(model, lambda: model(batch.input_ids, batch.layouts, pixels=batch.pixels,
                                                            features=batch.features, mask="causal",
                                                            labels=batch.labels))
        item = int(qs.item[0])
        with torch.no_grad():
            features = model.encode_images(torch.from_numpy(heldout.images[item : item + 1]))
            emb = model.embed(torch.tensor([ids]), features=features)
        prefill = measured_flops(lambda: model(inputs_embeds=emb, layouts=[layout], mask="causal"))
        mod = variant != "full"
        kv = model.kv_tokens_per_layer(layout) if mod else [layout.length] * cfg.llm.layers
        analytic = mod_flops(cfg, model.vocab_size, layout.length, len(layout.frames), cfg.image_slots,
                             k if mod else cfg.image_slots, mod_layers if mod else (),
                             router=variant == "learned")
        return {"train_flops_per_step": train_flops, "train_batch": len(batch),
                "train_batch_tokens": int(batch.input_ids.numel()), "saved_activation_bytes": saved,
                "prefill_flops": prefill, "prefill_flops_analytic": analytic, "sequence_tokens": layout.length,
                "kv_tokens_per_layer": kv, "kv_tokens": sum(kv), "kv_bytes": kv_bytes(cfg, kv)}

    def train(variant: str) -> dict:
        from .lit import VLMModule
        from .train import make_trainer

        t0 = time.perf_counter()
        torch.manual_seed(cfg.seed)
        if variant == "full":
            module = VLMModule(cfg, mask="causal", stage="mod-full", steps=steps)
        else:
            module = MoDModule(cfg, stage=f"mod-{variant}", steps=steps, r=r, layers=layers, selection=variant,
                               seed=cfg.seed)
        module.model.load_backbone(upper.state_dict())
        data.set_task("qa", voco_tokens=voco_k, image_slots=cfg.image_slots)
        data.batch_size = cfg.train.batch_size
        stats = StepStats()
        trainer = make_trainer(cfg, runs / "mod", module.stage, steps, progress=progress, checkpoint=False,
                               limit_val_batches=0)
        trainer.callbacks.append(stats)
        trainer.fit(module, datamodule=data)
        model = module.model.cpu().eval()
        cost = costs(model, variant)
        if hasattr(model, "reseed"):
            model.reseed()
        run = model_run(model, tok, heldout, qs, families, name=variant, method="full" if variant == "full" else
                        "mod", mask="causal", k=voco_k, progress=progress)
        run["tokens"] = cfg.image_slots
        return run | {"variant": variant, "train_steps": steps, "step_time_ms": stats.median_ms(),
                      "step_times_ms": [round(1e3 * t, 3) for t in stats.times],
                      "peak_mem_bytes": stats.peak_cuda, "rss_delta_kib": stats.rss_delta_kib,
                      "device": str(module.device), "cost": cost,
                      "router_params": sum(p.numel() for p in getattr(model, "routers", torch.nn.ModuleDict())
                                           .parameters()),
                      "wall_s": round(time.perf_counter() - t0, 1)}

    cells = [(f"mod-{v}", key_of({"v": v, "r": r, "layers": layers, "cfg": cfg.to_dict(), "steps": steps,
                                  "base": base_id, "questions": len(qs)}), lambda v=v: train(v))
             for v in variants]
    done, failed = run_cells(cells, out / "cells", desc="mod", progress=progress)
    by = {run["variant"]: run for run in done}
    if "full" in by:
        ref = by["full"]["cost"]
        for run in done:
            c = run["cost"]
            c["train_flops_ratio"] = round(c["train_flops_per_step"] / ref["train_flops_per_step"], 4)
            c["prefill_flops_ratio"] = round(c["prefill_flops"] / ref["prefill_flops"], 4)
            c["kv_ratio"] = round(c["kv_tokens"] / ref["kv_tokens"], 4)
            if run.get("step_time_ms") and by["full"].get("step_time_ms"):
                run["step_time_ratio"] = round(run["step_time_ms"] / by["full"]["step_time_ms"], 4)
    body = results(provenance(command, cfg.preset, seed, time.perf_counter() - start, out),
                   {"split": "heldout", "kind": "clips", "examples": len(qs), "families": families},
                   bounds + done, config=cfg.to_dict(),
                   mod={"r": r, "k_per_frame": k, "layers": layers, "mod_layers": list(mod_layers),
                        "variants": list(variants), "steps": steps, "failed": failed,
                        "memory": "peak_mem_bytes: CUDA max_memory_allocated over the fit (GPU only); "
                                  "rss_delta_kib: growth of the process's max RSS during the fit (CPU; a "
                                  "high-water mark, not comparable across cells); saved_activation_bytes: "
                                  "tensors autograd saved for one training batch (any device)",
                        "flops": "train_flops_per_step: FlopCounterMode over forward + backward of one fixed "
                                 "training batch (projector + LLM); prefill: one clip + question from its "
                                 "embeddings (LLM only), measured and analytic (mod_flops)",
                        "cells_wall_s": round(sum(run.get("wall_s", 0) for run in done), 1)})
    write_mod_outputs(body, out)
    return body


def mod_markdown(body: dict) -> str:
    families = body["eval"]["families"]
    head = ["variant", "accuracy", *families, "step ms", "train GFLOPs/step", "vs full", "activations MB",
            "KV tokens", "KV vs full"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in body["runs"]:
        if "variant" not in r:
            continue
        c = r["cost"]
        lines.append("| " + " | ".join([
            r["variant"], f"{r['accuracy']:.3f}", *(f"{r['per_family'].get(f, 0):.2f}" for f in families),
            "-" if r.get("step_time_ms") is None else f"{r['step_time_ms']:.1f}",
            f"{c['train_flops_per_step'] / 1e9:.3f}", f"{c.get('train_flops_ratio', float('nan')):.2f}",
            f"{c['saved_activation_bytes'] / 2**20:.1f}", str(c["kv_tokens"]),
            f"{c.get('kv_ratio', float('nan')):.2f}"]) + " |")
    by = {r["name"]: r for r in body["runs"]}
    m = body["mod"]
    lines += ["", f"MoD: r = {m['r']} (k = {m['k_per_frame']} vision tokens per frame), layers {m['layers']} "
                  f"{m['mod_layers']}, {m['steps']} steps. Base (no clip fine-tuning) "
                  f"{by['base']['accuracy']:.3f}, blind {by['blind']['accuracy']:.3f}."]
    return "\n".join(lines)


def plot_mod(body: dict):
    """Accuracy, training FLOPs and step time relative to full computation, per variant."""
    import numpy as np
    import seaborn as sns

    from .plotting import _finish, _new_figure

    rows = [r for r in body["runs"] if "variant" in r]
    names = [r["variant"] for r in rows]
    colors = sns.color_palette("colorblind", len(rows))
    fig, axes = _new_figure((10, 3.4), ncols=3)
    panels = [("held-out accuracy (clips)", [r["accuracy"] for r in rows]),
              ("training FLOPs / step vs full", [r["cost"].get("train_flops_ratio", np.nan) for r in rows]),
              ("median step time vs full", [r.get("step_time_ratio", np.nan) for r in rows])]
    for ax, (title, values) in zip(axes[0], panels):
        bars = ax.bar(np.arange(len(rows)), values, color=colors)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
        ax.set_xticks(np.arange(len(rows)), names)
        ax.set_title(title, fontsize=9)
    axes[0, 1].axhline(1.0, color="0.3", lw=0.8, ls="--")
    axes[0, 2].axhline(1.0, color="0.3", lw=0.8, ls="--")
    m = body["mod"]
    fig.suptitle(f"VideoLLM-MoD, r = {m['r']}, {m['layers']} layers, same steps and seed", fontsize=10)
    return _finish(fig)


def plot_mod_routing(frames, records, layout, sample: int = 0, scores: bool = False, names=None):
    """Which vision tokens each MoD layer computed, drawn over the clip: one row per
    `LayerRecord` (`MoDVLM.records`, or a pick of them), one column per frame of `layout`;
    bright patches were computed there, dark ones skipped the layer. With `scores`, each
    frame's router scores (min-max scaled per frame; learned routing only) instead: the
    ranking top-k cut. `names` labels the rows (default "layer l")."""
    import math

    from .plotting import _finish, _new_figure, plot_attention_overlay

    spans = [f.image for f in layout.frames if f.image.length]
    side = math.isqrt(spans[0].length)
    fig, axes = _new_figure((1.9 * len(spans), 2.0 * len(records)), nrows=len(records), ncols=len(spans))
    for i, (row, rec) in enumerate(zip(axes, records)):
        kept = set(rec.selected_of(sample))
        name = names[i] if names else f"layer {rec.layer}"
        for t, (ax, span) in enumerate(zip(row, spans)):
            on = torch.tensor([float(p in kept) for p in span.range()])
            if scores:
                s = rec.scores[sample, span.start : span.stop].float().cpu()
                values, what = (s - s.min()) / (s.max() - s.min()).clamp(min=1e-12), "score"
            else:
                values, what = on, f"{int(on.sum())}/{span.length} kept"
            plot_attention_overlay(frames[t], values, (side, side), ax, f"{name}, t={t}: {what}")
    return _finish(fig)


def write_mod_outputs(body: dict, out: Path) -> None:
    from .outputs import write_json
    from .plotting import save_figure

    write_json(out / "results.json", body)
    (out / "table.md").write_text(mod_markdown(body) + "\n")
    save_figure(plot_mod(body), out / "mod.png")
    print(mod_markdown(body))


__all__ = ["QUICK_CLIPS", "VARIANTS", "StepStats", "clip_families", "mod_markdown", "plot_mod", "plot_mod_routing",
           "run_mod_study", "saved_activation_bytes", "write_mod_outputs"]
