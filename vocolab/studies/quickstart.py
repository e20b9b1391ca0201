"""The main job behind `make quickstart` / `vocolab quickstart`: VoCo-LLaMA end to end.

It builds (or reuses) the cached data, trains the recipe (`training.recipe.run_recipe`:
clip -> pretrain -> upper bound -> VoCo model), evaluates the miniature Table 1
(upper, lower, blind, VoCo with retention) on held-out scenes, measures the
miniature Table 7 (no caching / full caching / VoCo caching), checks on the
trained model that no text token attends to BOS or an image token under the
`voco` mask, and writes figures, Markdown tables and `results.json` with
provenance.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from vocolab.core.config import Config
from vocolab.core.outputs import staged_output, write_json
from vocolab.core.runtime import quick_mode
from vocolab.data.batching import make_batch
from vocolab.data.storage import numpy_view
from vocolab.evaluation.attention import mask_check
from vocolab.studies.common import job_runs, study_config

QUICK_SIZES = {"data.train_scenes": 200, "data.heldout_scenes": 100, "data.val_scenes": 50,
               "data.train_clips": 100, "data.heldout_clips": 50,
               "train.clip_steps": 10, "train.pretrain_steps": 10, "train.instruct_steps": 10,
               "train.voco_steps": 10}


def job_config(preset_name: str, seed: int, overrides: dict | None = None) -> Config:
    """The preset, shrunk in quick mode (VOCOLAB_QUICK=1), then the user's overrides."""
    return study_config(preset_name, seed, overrides, QUICK_SIZES)


def _record(runs: Path, cfg: Config, finished: bool) -> None:
    runs.mkdir(parents=True, exist_ok=True)
    (runs / "invocation.json").write_text(json.dumps({"config": cfg.to_dict(), "finished": finished}) + "\n")


def _interrupted(runs: Path, cfg: Config) -> bool:
    """True when the last quickstart into `runs` had the same config and did not finish (it
    was interrupted): this one then resumes it. Either way this one is recorded as started."""
    path = runs / "invocation.json"
    last = json.loads(path.read_text()) if path.exists() else {}
    _record(runs, cfg, finished=False)
    return last.get("config") == json.loads(json.dumps(cfg.to_dict())) and last.get("finished") is False


def run_quickstart(preset_name: str = "nano", seed: int = 0, out: str | Path = "figures/quickstart",
                   overrides: dict | None = None, command: str = "vocolab quickstart",
                   runs: str | Path | None = None) -> dict:
    """Train the recipe, evaluate Table 1 and measure Table 7; write figures and results.json.

    Training logs and checkpoints go to `runs` (default: the cache folder), not to
    `out`, which receives only what is meant to be read and committed.
    """
    start = time.perf_counter()
    cfg = job_config(preset_name, seed, overrides)  # bad input fails here, before the slow imports
    from vocolab.core.runtime import device
    from vocolab.data.scenes import FAMILIES
    from vocolab.data.storage import load_clips
    from vocolab.evaluation.heldout import standard_runs
    from vocolab.inference.table7 import inference_costs
    from vocolab.models.checkpoint import save_checkpoint
    from vocolab.reporting.accuracy import plot_family_accuracy
    from vocolab.reporting.costs import plot_inference_costs
    from vocolab.reporting.images import plot_clip, plot_images
    from vocolab.reporting.masks import plot_mask_modes
    from vocolab.reporting.provenance import provenance
    from vocolab.reporting.results import results
    from vocolab.reporting.style import save_figure
    from vocolab.reporting.tables import table1_markdown, table7_markdown
    from vocolab.reporting.training import plot_training_curves
    from vocolab.training.recipe import run_recipe

    runs = Path(runs) if runs else job_runs("quickstart", cfg.preset, seed)
    k = cfg.voco.tokens
    print(f"vocolab quickstart | preset {cfg.preset} | seed {seed} | K={k} | "
          f"quick mode {'ON' if quick_mode() else 'off'} | device {device()}")
    resume = _interrupted(runs, cfg)
    if resume:
        print(f"resuming the interrupted run in {runs}: finished stages are loaded, the interrupted one goes on")
    with staged_output(out) as stage:
        trained = run_recipe(cfg, runs, progress=not quick_mode(), resume=resume)
        data = trained.data
        upper, voco = trained.upper.model.to(device()), trained.voco.model.to(device())  # fit returns them on CPU
        train, heldout = data.splits["train"], data.splits["heldout"]
        t = time.perf_counter()
        table, qs = standard_runs(upper, {f"voco-k{k}": voco}, data.tokenizer, train, heldout, FAMILIES,
                                  progress=not quick_mode())
        eval_s = time.perf_counter() - t

        q_ids = data.tokenizer(qs.questions[0], add_special_tokens=False)["input_ids"]
        cost = inference_costs(voco, torch.from_numpy(heldout.images[qs.item[:1]]), q_ids, k)

        batch = make_batch(data.tokenizer, data.ids, qs.questions[:4], qs.answers[:4], heldout.images[qs.item[:4]],
                           image_tokens=cfg.data.image_tokens, voco_tokens=k)
        clips = numpy_view(load_clips(cfg.data, "heldout", progress=False)).select(range(4))
        clip_batch = make_batch(data.tokenizer, data.ids, [q[0] for q in clips["question"]],
                                [a[0] for a in clips["answer"]], clips["frames"],
                                image_tokens=cfg.data.image_tokens, voco_tokens=k)
        voco.set_attn_implementation("eager")  # eager returns attention weights for the check
        checks = [mask_check(voco, batch, m) | {"input": "scenes"} for m in ("causal", "voco")]
        checks.append(mask_check(voco, clip_batch, "video") | {"input": "clips"})
        voco.set_attn_implementation(cfg.llm.attn_implementation)
        for name, model in (("upper", upper), ("voco", voco)):
            save_checkpoint(model, cfg, runs / "checkpoints" / name, {"stage": name})

        fam = {r["name"]: r["per_family"] for r in table}
        save_figure(plot_family_accuracy(fam, families=FAMILIES, title="held-out exact match per family"),
                    stage / "table1_accuracy.png")
        save_figure(plot_inference_costs(cost), stage / "table7_costs.png")
        logs = {n: runs / n / "metrics.csv" for n in trained.seconds if (runs / n / "metrics.csv").exists()}
        save_figure(plot_training_curves(logs), stage / "training_curves.png")
        save_figure(plot_mask_modes(batch.layouts[0]), stage / "masks.png")
        save_figure(plot_mask_modes(clip_batch.layouts[0]), stage / "masks_video.png")
        titles = [f"{q} {a} ({f})" for q, a, f in zip(qs.questions[:40:5], qs.answers[:40:5], qs.families[:40:5])]
        save_figure(plot_images(list(heldout.images[qs.item[:40:5]]), titles), stage / "data_sample.png")
        save_figure(plot_clip(clips[0]["frames"], title=f"{clips[0]['question'][0]} {clips[0]['answer'][0]}"),
                    stage / "clip_sample.png")

        body = results(
            provenance(command, cfg.preset, seed, time.perf_counter() - start, out),
            {"split": "heldout", "examples": len(qs), "families": list(FAMILIES)}, table, cost,
            config=cfg.to_dict(), stage_seconds=trained.seconds | {"eval": round(eval_s, 1)},
            parameters=voco.parameter_report(), mask_check=checks,
            **({"validation": trained.validation} if trained.validation else {}),
            **({"resumed_stages": trained.resumed} if trained.resumed else {}))
        write_json(stage / "results.json", body)
        (stage / "table1.md").write_text(table1_markdown(table, FAMILIES) + "\n")
        (stage / "table7.md").write_text(table7_markdown(cost) + "\n")
    _record(runs, cfg, finished=True)
    print("\nTable 1 (held-out exact match)\n" + table1_markdown(table, FAMILIES))
    print("\nTable 7 (one image, one question)\n" + table7_markdown(cost))
    print(f"\nwrote {out}/ in {time.perf_counter() - start:.0f} s; checkpoints and logs in {runs}/")
    return body
