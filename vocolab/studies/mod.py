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
Resumable like the other studies (`studies.cells`).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from lightning import seed_everything

from vocolab.core.runtime import quick_mode
from vocolab.evaluation.clips import clip_families
from vocolab.reporting.mod import write_mod_outputs
from vocolab.shipped import save_trained
from vocolab.studies.cells import architecture, key_of, model_id, run_cells
from vocolab.studies.common import QUICK, cell_steps, finish, runs_dir, study_config, train_clip_count
from vocolab.studies.off_lattice import check_steps, clip_start_model
from vocolab.training.measure import StepStats, saved_activation_bytes

VARIANTS = ("full", "learned", "random", "uniform")

QUICK_CLIPS = {"data.train_clips": 48, "data.heldout_clips": 12}


def run_mod_study(preset_name: str = "nano", out: str | Path = "figures/mod", *, seed: int = 0, r: float = 0.2,
                  layers: str = "interleaved", variants=VARIANTS, steps: int | None = None,
                  limit: int | None = None, train_clips: int | None = None, overrides: dict | None = None,
                  command: str = "vocolab mod", progress: bool = True, off_lattice_steps: int = 0) -> dict:
    """Train and evaluate every variant on clip QA; write results.json, table.md and a figure.
    `train_clips` draws more training clips than `data.train_clips` without changing the config,
    so the shared scene model is the one the other studies use; with `off_lattice_steps`, the
    variants start from it tuned on off-lattice scenes (`studies.off_lattice`)."""
    from vocolab.core.layout import assemble
    from vocolab.data.module import VoCoDataModule
    from vocolab.evaluation.heldout import Questions, blind_run, model_run
    from vocolab.training.mod import MoDModule
    from vocolab.zoo.mod_config import MoDConfig, mod_layer_indices, selected_per_frame

    start = time.perf_counter()
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise ValueError(f"mod study: unknown variant(s) {bad}; choose from {VARIANTS}")
    MoDConfig(r=r, layers=layers)  # bad r / layers fail before anything runs
    check_steps(off_lattice_steps)
    base_cfg = study_config(preset_name, seed, overrides, QUICK)  # the sweep's: its base model is shared
    quick_clips = {k: v for k, v in QUICK_CLIPS.items() if k not in (overrides or {})}
    cfg = base_cfg.override(**quick_clips) if quick_mode() else base_cfg
    n_train = train_clip_count(train_clips, cfg.data.train_clips, cfg.data.train_clips)  # before any training
    mod_layers = mod_layer_indices(cfg.llm.layers, layers)
    k = selected_per_frame(r, cfg.image_slots)
    steps = cell_steps(steps)
    out, runs = Path(out), runs_dir(base_cfg)
    scenes = VoCoDataModule(base_cfg, turns=base_cfg.train.turns, progress=progress)
    upper = clip_start_model(base_cfg, runs, scenes, off_lattice_steps, progress)
    data = VoCoDataModule(cfg, kind="clips", turns=cfg.train.turns, train_n=n_train, progress=progress,
                          tokenizer=scenes.tokenizer)
    data.setup()
    heldout, tok = data.splits["heldout"], data.tokenizer
    families = clip_families(heldout)
    qs = Questions.of(heldout, limit)
    voco_k = cfg.voco.tokens
    bounds = [model_run(upper, tok, heldout, qs, families, name="base", method="full", mask="causal", k=voco_k,
                        progress=progress),
              blind_run(data.splits["train"], qs, families)]
    base_id, base_architecture = model_id(upper), architecture(upper)

    # one clip and question for the inference costs
    q_ids = tok(qs.questions[0], add_special_tokens=False)["input_ids"]
    ids, layout = assemble(q_ids, [], upper.special, frames=cfg.data.frames, image_tokens=cfg.image_slots,
                           voco_tokens=voco_k, add_eos=False)

    def costs(model, variant: str) -> dict:
        from vocolab.inference.flops import measured_flops, measured_training_flops
        from vocolab.zoo.costs import kv_bytes
        from vocolab.zoo.mod_flops import mod_flops

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
        from vocolab.training.modules import VLMModule
        from vocolab.training.recipe import fine_tune

        t0 = time.perf_counter()
        seed_everything(cfg.seed, verbose=False)
        if variant == "full":
            module = VLMModule(cfg, mask="causal", stage="mod-full", steps=steps, tokenizer=tok)
        else:
            module = MoDModule(cfg, stage=f"mod-{variant}", steps=steps, r=r, layers=layers, selection=variant,
                               seed=cfg.seed, tokenizer=tok)
        stats = StepStats()
        model = fine_tune(module, data, cfg, runs / "mod", module.stage, steps, init=upper, progress=progress,
                          callbacks=[stats])
        # kept for `vocolab ship` and the notebooks (the cell's results say how it scored)
        save_trained(model, cfg, runs / "mod" / "models" / variant, {"stage": f"mod-{variant}", "steps": steps})
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
                                  "base": base_id, "architecture": base_architecture, "questions": len(qs),
                                  **({"train_clips": n_train} if train_clips else {})}),
              lambda v=v: train(v))
             for v in variants]
    ran: list[str] = []
    done, failed = run_cells(cells, out / "cells", desc="mod", progress=progress, ran=ran)
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
    details = {"r": r, "k_per_frame": k, "layers": layers, "mod_layers": list(mod_layers),
               "variants": list(variants), "steps": steps, "train_clips": n_train,
               "off_lattice_steps": off_lattice_steps, "failed": failed,
               "memory": "peak_mem_bytes: CUDA max_memory_allocated over the fit (GPU only); rss_delta_kib: growth "
                         "of the process's max RSS during the fit (CPU; a high-water mark, not comparable across "
                         "cells); saved_activation_bytes: tensors autograd saved for one training batch (any "
                         "device)",
               "flops": "train_flops_per_step: FlopCounterMode over forward + backward of one fixed training batch "
                        "(projector + LLM); prefill: one clip + question from its embeddings (LLM only), measured "
                        "and analytic (mod_flops)",
               "cells_wall_s": round(sum(run.get("wall_s", 0) for run in done), 1)}
    eval_info = {"split": "heldout", "kind": "clips", "examples": len(qs), "families": families}
    return finish("mod", out, command, start, cfg, eval_info, bounds + done, details, write_mod_outputs,
                  ran=ran, failed=failed, base=runs)

__all__ = ["QUICK_CLIPS", "VARIANTS", "run_mod_study"]
