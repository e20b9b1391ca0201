"""The tiny model configuration, models and inputs the model, backend, cache, checkpoint,
FastV and MoD tests share."""

import torch

from vocolab.core.presets import preset
from vocolab.core.layout import SpecialIds, assemble, labels_from_layouts, pad_batch
from vocolab.models.vlm import VoCoVLM

SPECIAL = SpecialIds(bos=1, eos=3, pad=0, image=4, voco=5)
VOCAB = 40
V = 16  # 16 px images, 4 px patches


def tiny_cfg(**overrides):
    base = {"data.image_size": 16, "data.patch_size": 4, "data.grid": 2, "data.max_objects": 4,
            "llm.hidden_size": 32, "llm.layers": 2, "llm.heads": 2, "llm.kv_heads": 2,
            "llm.intermediate_size": 64, "llm.max_positions": 128,
            "vision.hidden_size": 32, "vision.heads": 2, "vision.intermediate_size": 64,
            "vision.text_hidden_size": 32, "vision.projection_dim": 16}
    return preset("nano", **{**base, **overrides})


def tiny_vlm(backend="sdpa", layers=2, seed=0, untie=False, gqa=False, **overrides):
    """A seeded tiny VoCoVLM in eval mode; `gqa`: 4 query heads over 2 kv heads."""
    torch.manual_seed(seed)
    gqa_heads = {"llm.heads": 4, "llm.kv_heads": 2} if gqa else {}
    cfg = tiny_cfg(**{"llm.attn_implementation": backend, "llm.layers": layers, **gqa_heads, **overrides})
    vlm = VoCoVLM(cfg, SPECIAL, VOCAB).eval()
    if untie:
        # tied embeddings make a random model repeat its input token forever; an untied,
        # larger lm head gives logits (and greedy paths) that vary over the vocabulary
        g = torch.Generator().manual_seed(seed)
        vlm.llm.lm_head.weight = torch.nn.Parameter(torch.randn(VOCAB, cfg.llm.hidden_size, generator=g))
    return vlm


def images(n, seed, frames=None):
    """n random uint8 images `[n, 16, 16, 3]` (or clips `[n, frames, 16, 16, 3]`)."""
    g = torch.Generator().manual_seed(seed)
    shape = (n, 16, 16, 3) if frames is None else (n, frames, 16, 16, 3)
    return torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)


def random_text(n, seed):
    """n random ordinary token ids (no special id)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(6, VOCAB, (n,), generator=g).tolist()


def batch(specs, seed=0, voco=0):
    """specs: (question_len, answer_len, frames) per sample; frames=0 is text-only; `voco`
    VoCo slots per frame. Returns ids, layouts, pixels (a list, None for text-only)."""
    samples, pix = [], []
    for i, (q, a, frames) in enumerate(specs):
        samples.append(assemble(random_text(q, seed + i), random_text(a, seed + 50 + i), SPECIAL,
                                frames=max(frames, 1), image_tokens=V if frames else 0,
                                voco_tokens=voco if frames else 0))
        pix.append(images(frames, seed + 100 + i) if frames else None)
    ids = pad_batch([s for s, _ in samples], SPECIAL.pad)
    return ids, [l for _, l in samples], pix


def assert_real_positions_close(got, want, layouts, atol=1e-5):
    for b, l in enumerate(layouts):
        torch.testing.assert_close(got[b, : l.length], want[b, : l.length], atol=atol, rtol=0)


def assert_plain_causal_forward(model, vlm, ids, layouts, pix):
    """`model` (a wrapper of `vlm`) gives the plain causal forward's logits at every real
    position, and its loss."""
    labels = labels_from_layouts(ids, layouts)
    with torch.no_grad():
        want = vlm(ids, layouts, pixels=pix, mask="causal", labels=labels)
        got = model(ids, layouts, pixels=pix, mask="causal", labels=labels)
    assert got.logits.shape == want.logits.shape == (len(layouts), ids.shape[1], VOCAB)
    assert_real_positions_close(got.logits, want.logits, layouts)
    torch.testing.assert_close(got.loss, want.loss, atol=1e-5, rtol=0)
