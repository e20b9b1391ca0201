"""Every attention backend vocolab allows must *provably* honour the mask (docs/architecture.md).

How the proof works. Under `voco`, text may attend to VoCo tokens, and VoCo tokens
attend to the image, so in an LLM with two or more layers the image legitimately
reaches the text *through the VoCo tokens' keys/values*. Two tests therefore
split the claim:

* with a one-layer LLM the only route from image to text is direct attention,
  which the mask forbids: perturbing the image must leave every text logit
  unchanged (<= 1e-6) under `voco` and change it under `causal`;
* with a multi-layer LLM, text logits from the full masked forward must equal
  those computed against a cache holding *only the VoCo tokens'* keys/values:
  in every layer text reads the image only through the VoCo tokens.

Both run for each backend allowed on CPU (sdpa, eager); flex_attention is checked
against sdpa where a GPU is present.
"""

import pytest
import torch
from tiny import SPECIAL, VOCAB, V, tiny_cfg
from transformers import DynamicCache

from vocolab.core.layout import assemble, build_layout, pad_batch
from vocolab.core.masks import build_mask, for_backend
from vocolab.models.vlm import VoCoVLM

BACKENDS = ("sdpa", "eager")


def tiny_vlm(backend="sdpa", layers=2, seed=0):
    torch.manual_seed(seed)
    cfg = tiny_cfg(**{"llm.attn_implementation": backend, "llm.layers": layers})
    return VoCoVLM(cfg, SPECIAL, VOCAB).eval()


def images(n, seed, frames=None):
    g = torch.Generator().manual_seed(seed)
    shape = (n, 16, 16, 3) if frames is None else (n, frames, 16, 16, 3)
    return torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)


def voco_batch():
    """K=1 and K=2 image samples and a text-only sample, right-padded."""
    samples = [assemble([10, 11], [12], SPECIAL, image_tokens=V, voco_tokens=1),
               assemble([10, 13, 14], [12, 15], SPECIAL, image_tokens=V, voco_tokens=2),
               assemble([16, 17], [18], SPECIAL, frames=0)]
    return pad_batch([s for s, _ in samples], SPECIAL.pad), [l for _, l in samples]


def text_diff(a, b, layouts):
    return max((a[i, l.text.start:l.text.stop] - b[i, l.text.start:l.text.stop]).abs().max().item()
               for i, l in enumerate(layouts))


@pytest.mark.parametrize("backend", BACKENDS)
def test_voco_mask_hides_the_image_from_text(backend):
    vlm = tiny_vlm(backend, layers=1)
    ids, layouts = voco_batch()
    pix_a, pix_b = images(3, seed=1), images(3, seed=2)
    with torch.no_grad():
        emb_a, emb_b = vlm.embed(ids, pixels=pix_a), vlm.embed(ids, pixels=pix_b)
        image_pos = ids == SPECIAL.image
        assert (emb_a[image_pos] - emb_b[image_pos]).abs().max() > 1e-2  # the perturbation is real
        logits = {m: (vlm(ids, layouts, pixels=pix_a, mask=m).logits,
                      vlm(ids, layouts, pixels=pix_b, mask=m).logits) for m in ("voco", "causal")}
    assert text_diff(*logits["voco"], layouts) <= 1e-6
    assert text_diff(*logits["causal"], layouts[:2]) > 1e-3
    for i, layout in enumerate(layouts[:2]):  # VoCo tokens do read the image
        vpos = layout.voco_positions()
        assert (logits["voco"][0][i, vpos] - logits["voco"][1][i, vpos]).abs().max() > 1e-3


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("k", [1, 2])
def test_text_reads_the_image_only_through_voco_keys_values(backend, k):
    vlm = tiny_vlm(backend, layers=3)
    tokens, layout = assemble([10, 11, 13], [12, 15], SPECIAL, image_tokens=V, voco_tokens=k)
    ids = torch.tensor([tokens])
    text = slice(layout.text.start, layout.text.stop)
    prefix = layout.text.start
    with torch.no_grad():
        emb = vlm.embed(ids, pixels=images(1, seed=3))
        full = {m: vlm(inputs_embeds=emb, layouts=[layout], mask=m).logits[0, text] for m in ("voco", "causal")}
        # [BOS][IMG][VOCO] once, then keep only the VoCo positions' keys/values
        pre = vlm(inputs_embeds=emb[:, :prefix], mask=build_mask([layout], "voco")[..., :prefix, :prefix],
                  use_cache=True).past_key_values
        vpos = torch.tensor(layout.voco_positions())
        cache = DynamicCache()
        for i, layer in enumerate(pre.layers):
            cache.update(layer.keys[:, :, vpos], layer.values[:, :, vpos], i)
        q = layout.text.length
        mask = torch.ones(1, 1, q, k + q, dtype=torch.bool)
        mask[0, 0, :, k:] = torch.ones(q, q, dtype=torch.bool).tril()
        pos = torch.arange(layout.text.start, layout.text.stop).unsqueeze(0)
        from_voco = vlm(inputs_embeds=emb[:, prefix:], mask=mask, past_key_values=cache,
                        position_ids=pos).logits[0]
    torch.testing.assert_close(from_voco, full["voco"], atol=1e-5, rtol=0)
    assert (from_voco - full["causal"]).abs().max() > 1e-3  # control: causal text reads the image directly


def test_eager_attention_weights_from_text_to_image_are_zero_in_every_layer():
    vlm = tiny_vlm("eager", layers=3)
    ids, layouts = voco_batch()
    with torch.no_grad():
        out = {m: vlm(ids, layouts, pixels=images(3, seed=4), mask=m, output_attentions=True).attentions
               for m in ("voco", "causal")}
    for i, layout in enumerate(layouts[:2]):
        text, img = layout.text.range(), layout.image_positions()
        for voco_layer, causal_layer in zip(out["voco"], out["causal"]):
            assert voco_layer[i][:, text][:, :, img].abs().max() == 0
            assert voco_layer[i][:, text][:, :, [0]].abs().max() == 0  # BOS hidden from text too
            assert causal_layer[i][:, text][:, :, img].min() > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_video_mask_streams_frames_independently(backend):
    k = 2
    tokens, layout = assemble([10, 11], [12], SPECIAL, frames=2, image_tokens=V, voco_tokens=k)
    ids = torch.tensor([tokens])
    clip = images(1, seed=5, frames=2)
    frame1_changed, frame2_changed = clip.clone(), clip.clone()
    frame1_changed[0, 0] = images(1, seed=6)[0]
    frame2_changed[0, 1] = images(1, seed=7)[0]
    v1, v2 = layout.frames[0].voco.range(), layout.frames[1].voco.range()

    deep = tiny_vlm(backend, layers=3)
    with torch.no_grad():
        base = deep(ids, [layout], pixels=clip, mask="video", output_hidden_states=True).hidden_states
        moved = deep(ids, [layout], pixels=frame1_changed, mask="video", output_hidden_states=True).hidden_states
    for h_base, h_moved in zip(base[1:], moved[1:]):  # every layer's output
        assert (h_base[0, v2] - h_moved[0, v2]).abs().max() <= 1e-6  # frame 2's VoCo never sees frame 1
    assert (base[-1][0, v1] - moved[-1][0, v1]).abs().max() > 1e-3

    shallow = tiny_vlm(backend, layers=1)
    with torch.no_grad():
        for mode, check in (("video", lambda d: d <= 1e-6), ("causal", lambda d: d > 1e-3)):
            ref = shallow(ids, [layout], pixels=clip, mask=mode).logits
            for changed in (frame1_changed, frame2_changed):
                other = shallow(ids, [layout], pixels=changed, mask=mode).logits
                assert check(text_diff(ref, other, [layout])), mode


def test_eager_gets_an_additive_float_mask_and_matches_sdpa():
    ids, layouts = voco_batch()
    mask = build_mask(layouts, "voco")
    additive = for_backend(mask, "eager", torch.float32)
    assert additive.dtype == torch.float32
    assert (additive[mask] == 0).all() and (additive[~mask] == torch.finfo(torch.float32).min).all()
    assert for_backend(mask, "sdpa").dtype == torch.bool

    eager, sdpa = tiny_vlm("eager", layers=2), tiny_vlm("sdpa", layers=2)
    pix = images(3, seed=8)
    with torch.no_grad():
        for mode in ("voco", "causal"):
            torch.testing.assert_close(eager(ids, layouts, pixels=pix, mask=mode).logits,
                                       sdpa(ids, layouts, pixels=pix, mask=mode).logits, atol=1e-5, rtol=0)

    # the official code's bug: a bool mask handed to eager is *added* as 0/1 and masks nothing
    shallow = tiny_vlm("eager", layers=1)
    pos = torch.arange(ids.shape[1]).expand_as(ids)

    def text_logits(pixels, attention_mask):
        emb = shallow.embed(ids, pixels=pixels)
        return shallow.llm(inputs_embeds=emb, attention_mask=attention_mask, position_ids=pos).logits

    with torch.no_grad():
        raw = text_diff(text_logits(images(3, seed=1), mask), text_logits(images(3, seed=2), mask), layouts)
        fixed = text_diff(text_logits(images(3, seed=1), additive), text_logits(images(3, seed=2), additive), layouts)
    assert raw > 1e-3 and fixed <= 1e-6


def test_backends_that_ignore_the_mask_are_refused():
    cfg = tiny_cfg()
    cfg.llm.attn_implementation = "flash_attention_2"  # bypasses Config validation on purpose
    with pytest.raises(ValueError, match="ignore"):
        VoCoVLM(cfg, SPECIAL, VOCAB)
    vlm = tiny_vlm()
    with pytest.raises(ValueError, match="ignore"):
        vlm.set_attn_implementation("flash_attention_2")
    assert vlm.attn_implementation == "sdpa"
    vlm.set_attn_implementation("eager")
    assert vlm.attn_implementation == "eager" and vlm.cfg.llm.attn_implementation == "eager"


def test_flex_attention_on_cpu_is_refused():
    ids, layouts = voco_batch()
    vlm = tiny_vlm("flex_attention")
    with pytest.raises(ValueError, match="GPU"):
        vlm(ids, layouts, pixels=images(3, seed=1))


def test_forward_refuses_unusable_masks():
    vlm = tiny_vlm()
    ids, layouts = voco_batch()
    pix = images(3, seed=1)
    bool_mask = build_mask(layouts, "voco")
    bad = [dict(mask=bool_mask.float()),            # an additive mask: the model converts itself
           dict(mask=bool_mask[:, :, :-1]),          # wrong shape
           dict(mask="voco", layouts=layouts[:2]),   # one layout short
           dict(mask="diagonal")]                    # unknown mode
    for kwargs in bad:
        kwargs.setdefault("layouts", layouts)
        with pytest.raises(ValueError):
            vlm(ids, pixels=pix, **kwargs)
    with torch.no_grad():  # a prebuilt bool mask is the same as its mode string
        torch.testing.assert_close(vlm(ids, pixels=pix, mask=bool_mask).logits,
                                   vlm(ids, layouts, pixels=pix, mask="voco").logits, atol=0, rtol=0)
        past = vlm(torch.tensor([[1, 10, 11]]), [build_layout(2, 0)], mask="causal",
                   use_cache=True).past_key_values
    # with a non-empty cache only the caller knows the mask and the positions
    with pytest.raises(ValueError, match="cache"):
        vlm(torch.tensor([[12]]), [build_layout(3, 0)], mask="causal", past_key_values=past)
    with pytest.raises(ValueError, match="cache"):
        vlm(torch.tensor([[12]]), mask=torch.ones(1, 1, 1, 4, dtype=torch.bool), past_key_values=past)


@pytest.mark.parametrize("backend", BACKENDS)
def test_mixed_padded_batch_has_no_nan_and_matches_single_runs(backend):
    vlm = tiny_vlm(backend, layers=2)
    samples = [assemble([10, 11], [12], SPECIAL, image_tokens=V, voco_tokens=1),       # 22 tokens
               assemble([13, 14], [15], SPECIAL, frames=0),                          # 6 tokens
               assemble(list(range(6, 32)), [15, 16], SPECIAL, frames=0)]             # 30 tokens
    ids = pad_batch([s for s, _ in samples], SPECIAL.pad)
    layouts = [l for _, l in samples]
    pix = [images(1, seed=9)[0], None, None]
    with torch.no_grad():
        for mode in ("voco", "causal"):
            out = vlm(ids, layouts, pixels=pix, mask=mode, output_hidden_states=True)
            assert torch.isfinite(out.logits).all()
            assert all(torch.isfinite(h).all() for h in out.hidden_states)
            for i, (tokens, layout) in enumerate(samples):
                alone = vlm(torch.tensor([tokens]), [layout], pixels=[pix[i]] if pix[i] is not None else None,
                            mask=mode).logits[0]
                torch.testing.assert_close(out.logits[i, :layout.length], alone, atol=1e-5, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="FlexAttention needs a GPU here")
def test_flex_attention_matches_sdpa_on_gpu():
    ids, layouts = voco_batch()
    pix = images(3, seed=1)
    flex, sdpa = tiny_vlm("flex_attention").cuda(), tiny_vlm("sdpa").cuda()
    with torch.no_grad():
        for mode in ("voco", "causal"):
            a = flex(ids.cuda(), layouts, pixels=pix.cuda(), mask=mode).logits
            b = sdpa(ids.cuda(), layouts, pixels=pix.cuda(), mask=mode).logits
            torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
