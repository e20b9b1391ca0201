"""The main job behind `make quickstart` / `vocolab quickstart`.

At this stage of the project it proves the whole foundation on one preset: it
builds (or reuses) the cached data sets, the tokenizer and the VLM, runs one
forward pass under every mask mode, checks on real data that under the `voco`
and `video` masks no text token attends to BOS or an image token in any layer,
and writes the mask and data figures plus a JSON summary with
provenance.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .batching import Batch, make_batch
from .config import Config, preset, quick_mode
from .data.storage import numpy_view
from .outputs import staged_output, write_json

QUICK_SIZES = {"data.train_scenes": 200, "data.heldout_scenes": 100,
               "data.train_clips": 100, "data.heldout_clips": 50}


def job_config(preset_name: str, seed: int, overrides: dict | None = None) -> Config:
    """The preset, shrunk in quick mode (VOCOLAB_QUICK=1), then the user's overrides."""
    cfg = preset(preset_name, seed=seed)
    if quick_mode():
        cfg = cfg.override(**QUICK_SIZES)
    return cfg.override(**overrides) if overrides else cfg


def first_questions(rows, tokenizer, ids, cfg: Config, key: str, n: int = 4) -> Batch:
    """A batch of the first question of each of the first `n` rows (scenes or clips)."""
    rows = rows.select(range(min(n, len(rows))))
    return make_batch(tokenizer, ids, [q[0] for q in rows["question"]], [a[0] for a in rows["answer"]],
                      numpy_view(rows)[key],
                      image_tokens=cfg.data.image_tokens, voco_tokens=cfg.voco.tokens)


@torch.no_grad()
def mask_check(model, batch: Batch, mode: str) -> dict:
    """Loss under `mode` and the largest attention mass any text token puts on BOS and
    image tokens, in any layer and head: exactly 0 when the mask hides the image.

    (Text logits themselves do depend on the image under `voco`, through the VoCo
    tokens' keys/values; that is the point of compression.)"""
    out = model(batch.input_ids, batch.layouts, pixels=batch.pixels, mask=mode, labels=batch.labels,
                output_attentions=True)
    mass = 0.0
    for i, layout in enumerate(batch.layouts):
        hidden = [0] + layout.image_positions()
        rows = slice(layout.text.start, layout.text.stop)
        for attn in out.attentions:  # [B, heads, L, L] per layer
            mass = max(mass, attn[i, :, rows][..., hidden].sum(-1).max().item())
    return {"mode": mode, "loss": round(out.loss.item(), 4), "finite": bool(torch.isfinite(out.logits).all()),
            "max_text_attention_on_bos_and_image": mass}


def run_quickstart(preset_name: str = "nano", seed: int = 0, out: str | Path = "figures/quickstart",
                   overrides: dict | None = None, command: str = "vocolab quickstart") -> dict:
    start = time.perf_counter()
    cfg = job_config(preset_name, seed, overrides)  # bad input fails here, before the slow imports
    from .data import build_tokenizer, load_clips, load_scenes, special_ids
    from .models import VoCoVLM
    from .plotting import plot_clip, plot_images, plot_mask_modes, save_figure
    from .runtime import provenance

    print(f"vocolab quickstart | preset {cfg.preset} | seed {seed} | quick mode {'ON' if quick_mode() else 'off'}")
    with staged_output(out) as stage:
        timings = {}
        data = {}
        for kind, loader in (("scenes", load_scenes), ("clips", load_clips)):
            for split in ("train", "heldout"):
                t = time.perf_counter()
                data[f"{kind}_{split}"] = loader(cfg.data, split)
                timings[f"data_{kind}_{split}_s"] = round(time.perf_counter() - t, 2)
        tokenizer = build_tokenizer(cfg.data)
        ids = special_ids(tokenizer)
        torch.manual_seed(seed)
        model = VoCoVLM(cfg, ids, len(tokenizer)).eval()
        model.set_attn_implementation("eager")  # eager returns attention weights for the check
        params = model.parameter_report()
        print(f"data: {len(data['scenes_train'])} train / {len(data['scenes_heldout'])} held-out scenes, "
              f"{len(data['clips_train'])} / {len(data['clips_heldout'])} clips | vocab {len(tokenizer)} | "
              f"model {params['total']:,} parameters")

        scenes = first_questions(data["scenes_heldout"], tokenizer, ids, cfg, "image")
        clips = first_questions(data["clips_heldout"], tokenizer, ids, cfg, "frames")
        t = time.perf_counter()
        forwards = [mask_check(model, scenes, m) | {"input": "scenes"} for m in ("causal", "voco")]
        forwards.append(mask_check(model, clips, "video") | {"input": "clips"})
        timings["forward_s"] = round(time.perf_counter() - t, 2)
        for f in forwards:
            print(f"  {f['input']:6s} {f['mode']:6s} loss {f['loss']:.3f}  "
                  f"largest text attention on BOS + image: {f['max_text_attention_on_bos_and_image']:.3g}")

        save_figure(plot_mask_modes(scenes.layouts[0]), stage / "masks.png")
        save_figure(plot_mask_modes(clips.layouts[0]), stage / "masks_video.png")
        sample = data["scenes_heldout"].select(range(min(8, len(data["scenes_heldout"]))))
        titles = [f"{q[0]} {a[0]} ({f[0]})" for q, a, f in zip(sample["question"], sample["answer"], sample["family"])]
        save_figure(plot_images(list(numpy_view(sample)["image"]), titles), stage / "data_sample.png")
        clip0 = data["clips_heldout"][0]
        save_figure(plot_clip(numpy_view(data["clips_heldout"])[0]["frames"],
                              title=f"{clip0['question'][0]} {clip0['answer'][0]}"),
                    stage / "clip_sample.png")

        summary = {
            "provenance": provenance(command, cfg.preset, seed, time.perf_counter() - start),
            "config": cfg.to_dict(),
            "data": {k: len(v) for k, v in data.items()} | {"vocab_size": len(tokenizer)},
            "parameters": params,
            "forward": forwards,
            "timings": timings,
        }
        write_json(stage / "quickstart.json", summary)
    print(f"wrote {out}/ (masks.png, masks_video.png, data_sample.png, clip_sample.png, quickstart.json) "
          f"in {time.perf_counter() - start:.1f} s")
    return summary
