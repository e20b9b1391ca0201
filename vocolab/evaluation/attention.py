"""Where attention goes, read off a trained model: the diagnostics behind the VoCo
claims, not the training loss.

* `attention_maps` / `mean_attention`: per layer, where the text looks (the image under
  `causal`, the VoCo tokens under `voco`) and where the VoCo tokens look in the image,
  ready to draw over the scene's patch grid (an eager forward: the only backend that
  returns weights);
* `loss_report`: every term of a distilled student's loss and the student-teacher
  hidden-state gap per layer;
* `mask_check`: the largest attention mass any text token puts on BOS and image tokens
  under a mask mode, which is exactly 0 when the mask hides the image.
"""

from __future__ import annotations

import math

import torch

from vocolab.core.layout import Layout
from vocolab.data.batching import Batch
from vocolab.models.inputs import model_device
from vocolab.models.vlm import VoCoVLM
from vocolab.training.distill import DistillModule, text_hidden_mse


def _inputs(batch_or_inputs) -> tuple[torch.Tensor, list[Layout], object, object]:
    if isinstance(batch_or_inputs, Batch):
        b = batch_or_inputs
        return b.input_ids, list(b.layouts), b.pixels, b.features
    if isinstance(batch_or_inputs, dict) and "input_ids" in batch_or_inputs and "layouts" in batch_or_inputs:
        d = batch_or_inputs
        return d["input_ids"], list(d["layouts"]), d.get("pixels"), d.get("features")
    raise ValueError("attention_maps: give a Batch or a dict with input_ids, layouts and pixels or features")


def attention_maps(vlm: VoCoVLM, batch_or_inputs, mask: str = "voco") -> dict:
    """Per-layer attention of the text and of the VoCo tokens, from an eager forward.

    The model is switched to eager attention (the only backend that returns weights)
    and back, in eval mode and without autograd. Every sample must hold the same
    number of frames F, image tokens V and VoCo tokens K (as `make_batch` builds).
    Returns (N layers, B samples, H query heads, T = longest text span):

    * `text_to_image` `[N, B, H, T, F, V]`: text positions' attention to the image
      patches (exactly 0 under `voco`/`video`: the mask hides the image from text);
    * `text_to_voco`  `[N, B, H, T, F, K]`: text positions' attention to the VoCo tokens;
    * `text`: the one of the two the text reads under `mask` (image if `causal`, else VoCo);
    * `voco_to_image` `[N, B, H, F, K, V]`: each frame's VoCo tokens' attention to that
      frame's patches; `.unflatten(-1, grid)` gives the patch grid;
    * `text_mask` `[B, T]`: real text rows (shorter samples are zero-padded);
    * `grid`: `(sqrt(V), sqrt(V))`; `mask`: the mode; `keys`: "image" or "voco".
    """
    input_ids, layouts, pixels, features = _inputs(batch_or_inputs)
    if not layouts or any(not l.frames for l in layouts):
        raise ValueError("attention_maps: every sample needs an image (text-only samples have no maps)")
    shape = {(len(l.frames), l.image_tokens, l.voco_tokens) for l in layouts}
    if len(shape) > 1:
        raise ValueError(f"attention_maps: samples differ in (frames, image tokens, VoCo tokens): {sorted(shape)}")
    frames = layouts[0].frames
    v = layouts[0].image_tokens
    side = math.isqrt(v)
    previous, was_training = vlm.attn_implementation, vlm.training
    try:
        vlm.set_attn_implementation("eager")
        vlm.eval()
        with torch.no_grad():
            device = model_device(vlm)
            out = vlm(input_ids.to(device), layouts, pixels=pixels, features=features, mask=mask,
                      output_attentions=True)
    finally:
        vlm.set_attn_implementation(previous)
        vlm.train(was_training)
    att = torch.stack([a.float().cpu() for a in out.attentions])  # [N, B, H, L, L]
    n, b, h = att.shape[:3]
    image = torch.tensor([list(f.image.range()) for f in frames])  # [F, V]
    voco = torch.tensor([list(f.voco.range()) for f in frames])  # [F, K]
    longest = max(l.text.length for l in layouts)
    rows = att.new_zeros(n, b, h, longest, att.shape[-1])
    text_mask = torch.zeros(b, longest, dtype=torch.bool)
    for i, l in enumerate(layouts):
        rows[:, i, :, : l.text.length] = att[:, i, :, l.text.start : l.text.stop]
        text_mask[i, : l.text.length] = True
    text_to_image = rows[..., image.flatten()].unflatten(-1, tuple(image.shape))
    text_to_voco = rows[..., voco.flatten()].unflatten(-1, tuple(voco.shape))
    voco_to_image = torch.stack([att[:, :, :, voco[f]][..., image[f]] for f in range(len(frames))], dim=3)
    keys = "image" if mask == "causal" else "voco"
    return {
        "text_to_image": text_to_image,
        "text_to_voco": text_to_voco,
        "text": text_to_image if keys == "image" else text_to_voco,
        "voco_to_image": voco_to_image,
        "text_mask": text_mask,
        "grid": (side, side) if side * side == v else None,
        "mask": mask,
        "keys": keys,
    }


def mean_attention(maps: dict, sample: int = 0, frame: int = 0) -> dict:
    """One sample's `attention_maps` averaged over heads (and, for the text, over its real
    positions): `text_to_image` `[N, V]`, `text_to_voco` `[N, K]`, `voco_to_image`
    `[N, K, V]` for one frame, N layers. Row sums say how much attention each part gets."""
    rows = maps["text_mask"][sample]
    text = lambda name: maps[name][:, sample][:, :, rows][..., frame, :].mean(dim=(1, 2))  # noqa: E731
    return {"text_to_image": text("text_to_image"), "text_to_voco": text("text_to_voco"),
            "voco_to_image": maps["voco_to_image"][:, sample, :, frame].mean(dim=1), "grid": maps["grid"]}


@torch.no_grad()
def loss_report(student: DistillModule, batch: Batch) -> dict[str, float]:
    """Every term of the student's loss on `batch`, the teacher's own next-token loss and
    the student-teacher hidden-state gap per layer (the `attention` term, layer by layer)."""
    was_training = student.training
    student.eval()
    terms = {name: value.item() for name, value in student.distill_losses(batch).items()}
    ref = student.teacher_forward(batch, output_hidden_states=True)
    mine = student.model(batch.input_ids, batch.layouts, pixels=batch.pixels, features=batch.features,
                         mask=student.mask, output_hidden_states=True).hidden_states
    terms["teacher ce (causal)"] = student.teacher(batch.input_ids, batch.layouts, pixels=batch.pixels,
                                                   features=batch.features, mask="causal",
                                                   labels=batch.labels).loss.item()
    for layer in range(student.cfg.llm.layers):
        terms[f"hidden, layer {layer}"] = text_hidden_mse(mine, ref.hidden_states, batch.layouts, [layer]).item()
    student.train(was_training)
    return terms


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


__all__ = ["attention_maps", "loss_report", "mask_check", "mean_attention"]
