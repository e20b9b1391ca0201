"""Counting FLOPs, measured and analytic, on one convention: 2 FLOPs per multiply-add,
attention computed densely (masked-out pairs included: dense kernels compute them too),
elementwise work (norms, softmax, RoPE, activations) not counted.

`measured_flops` / `measured_training_flops` use `torch.utils.flop_counter`, which
counts matrix multiplies and the GPU SDPA kernels but has no formula for the kernels CPU
SDPA dispatches to: attention would silently count as zero. `cpu_sdpa_formulas` registers
torch's own SDPA formulas for them (forward and backward), so the count is the same
whichever backend runs (a test checks sdpa == eager). `analytic_flops` counts the LLaMA
stack layer by layer and must equal the measured count.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count


def _cpu_sdpa_forward(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """`aten._scaled_dot_product_flash_attention_for_cpu`: QK^T and AV, as torch counts the GPU kernels."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None,
                       **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def cpu_sdpa_formulas() -> dict:
    """FlopCounterMode formulas for the CPU SDPA kernels (forward and backward), which torch
    does not count by itself; the GPU kernels already have torch's own formulas."""
    out = {}
    for name, fn in (("_scaled_dot_product_flash_attention_for_cpu", _cpu_sdpa_forward),
                     ("_scaled_dot_product_flash_attention_for_cpu_backward", _cpu_sdpa_backward)):
        op = getattr(torch.ops.aten, name, None)
        if op is not None:
            out[op] = fn
    return out


def measured_flops(fn: Callable[[], object]) -> int:
    """Total FLOPs counted while `fn()` runs (under `torch.no_grad`); see the module docstring."""
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=cpu_sdpa_formulas()) as counter:
        fn()
    return int(counter.get_total_flops())


def measured_training_flops(step: Callable[[], object]) -> int:
    """FLOPs counted while `step()` runs with autograd on: forward and backward when `step`
    calls `.backward()` (e.g. `lambda: model(...).loss.backward()`)."""
    with torch.enable_grad(), FlopCounterMode(display=False, custom_mapping=cpu_sdpa_formulas()) as counter:
        step()
    return int(counter.get_total_flops())


def vision_flops(*, image_size: int, patch_size: int, hidden: int, layers: int, intermediate: int,
                 out_hidden: int, images: int = 1) -> int:
    """Forward FLOPs of the CLIP vision tower (all layers run) plus the 2-layer MLP projector
    for `images` images: patch conv, per layer QKV+O projections, attention and MLP over
    P + 1 tokens (CLS included), then the projector on the P patch tokens."""
    p = (image_size // patch_size) ** 2
    t = p + 1
    conv = 2 * p * (3 * patch_size * patch_size) * hidden
    per_layer = 2 * t * hidden * 4 * hidden + 2 * 2 * t * t * hidden + 2 * 2 * t * hidden * intermediate
    projector = 2 * p * hidden * out_hidden + 2 * p * out_hidden * out_hidden
    return images * (conv + layers * per_layer + projector)


def analytic_flops(*, layers: int, hidden: int, intermediate: int, heads: int, kv_heads: int, vocab: int,
                   q_len: int, kv_len: int, batch: int = 1, logits: int | None = None,
                   vision: dict | None = None) -> int:
    """Forward FLOPs of the LLaMA stack for `q_len` new tokens attending to `kv_len` keys
    (`kv_len` counts everything attended: cached tokens + the new ones; a plain forward
    has kv_len == q_len, attention computed densely).

    per layer: projections 2*q*d*(d + 2*d_kv + d), MLP 2*3*q*d*ff, attention 2*2*q*kv*d;
    lm head 2*logits*d*vocab (`logits` defaults to q_len: logits at every position).
    `vision`: keyword arguments of `vision_flops` (minus `out_hidden`) to add the vision
    tower and projector.
    """
    d_kv = kv_heads * (hidden // heads)
    logits = q_len if logits is None else logits
    per_layer = (2 * q_len * hidden * (hidden + 2 * d_kv + hidden)
                 + 2 * 3 * q_len * hidden * intermediate
                 + 2 * 2 * q_len * kv_len * hidden)
    total = batch * (layers * per_layer + 2 * logits * hidden * vocab)
    if vision:
        total += vision_flops(**{"images": batch, **vision, "out_hidden": hidden})
    return total


def config_flops(cfg, vocab: int, q_len: int, kv_len: int, *, images: int = 0, batch: int = 1) -> int:
    """`analytic_flops` with the sizes read from a `vocolab.config.Config`; `images` > 0 adds
    that many images' vision tower + projector per sample."""
    m, v = cfg.llm, cfg.vision
    vision = None
    if images:
        vision = dict(image_size=cfg.data.image_size, patch_size=cfg.data.patch_size, hidden=v.hidden_size,
                      layers=v.layers, intermediate=v.intermediate_size, images=images * batch)
    return analytic_flops(layers=m.layers, hidden=m.hidden_size, intermediate=m.intermediate_size,
                          heads=m.heads, kv_heads=m.kv_heads, vocab=vocab, q_len=q_len, kv_len=kv_len,
                          batch=batch, vision=vision)



def training_flops(cfg, vocab: int, batch, *, teacher: bool = False) -> int:
    """Analytic FLOPs of one training step on `batch`, the model FLOPs an MFU figure divides
    by: forward + backward = 3x the forward of what trains; a frozen teacher's forward once.

    A VLM batch (`data.batching.Batch`): the LLM over the padded batch (attention dense
    over its length), the projector over the image tokens, and the vision tower when pixels
    go in (with cached frozen features it runs once per image, before training). A CLIP
    batch (the contrastive stage's dict): both towers, trained."""
    if isinstance(batch, dict):
        images, length = batch["input_ids"].shape
        v, d = cfg.vision, cfg.vision.text_hidden_size
        text = v.text_layers * (2 * length * d * 4 * d + 4 * length * length * d + 2 * 2 * length * d * 4 * d)
        vision = vision_flops(image_size=cfg.data.image_size, patch_size=cfg.data.patch_size, hidden=v.hidden_size,
                              layers=v.layers, intermediate=v.intermediate_size, out_hidden=v.projection_dim,
                              images=images)
        return 3 * (vision + images * text)
    rows, length = batch.input_ids.shape
    image_tokens = sum(len(layout.image_positions()) for layout in batch.layouts)
    llm = config_flops(cfg, vocab, q_len=length, kv_len=length, batch=rows)
    projector = image_tokens * 2 * (cfg.vision.hidden_size * cfg.llm.hidden_size + cfg.llm.hidden_size ** 2)
    step = 3 * (llm + projector) + (llm + projector if teacher else 0)
    if batch.pixels is not None:  # the tower runs (frozen: forward only) when features are not cached
        frames = image_tokens // max(1, cfg.image_slots)
        step += vision_flops(image_size=cfg.data.image_size, patch_size=cfg.data.patch_size,
                             hidden=cfg.vision.hidden_size, layers=cfg.vision.layers,
                             intermediate=cfg.vision.intermediate_size, out_hidden=0, images=frames)
    return step


__all__ = [
    "training_flops", "analytic_flops", "config_flops", "measured_flops", "measured_training_flops",
    "cpu_sdpa_formulas", "vision_flops",
]
