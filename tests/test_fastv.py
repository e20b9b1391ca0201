"""FastV (in-LLM token dropping) on a tiny causal model.

* keep = V, or dropping after the last layer, is the plain causal forward (sdpa and eager,
  right-padded batch with a text-only sample), loss included;
* keep < V changes the text logits, keeps `keep` image tokens per frame and every text
  token, and drops exactly the image tokens with the lowest received attention, checked
  against transformers' own eager attention weights;
* padded batches give the same result as each sample on its own;
* greedy decoding runs through it and keep = V decodes as the plain model;
* measured FLOPs equal the analytic `fastv_flops`, and the saving follows the formula;
* bad arguments are refused.
"""

import pytest
import tiny
import torch
from tiny import SPECIAL, VOCAB, V, assert_plain_causal_forward, batch, images, random_text, tiny_cfg

from vocolab.core.layout import assemble
from vocolab.core.masks import build_mask, for_backend
from vocolab.inference.flops import config_flops, measured_flops
from vocolab.inference.generate import greedy_generate
from vocolab.zoo import registry
from vocolab.zoo.fastv import FastVModel, fastv_flops, fastv_paper_ratio

LAYERS = 3


def tiny_vlm(backend="sdpa", seed=0):
    return tiny.tiny_vlm(backend, layers=LAYERS, seed=seed, untie=True, gqa=True)


MIXED = [(7, 3, 1), (2, 2, 1), (5, 2, 0)]  # two lengths with an image, one text-only: padding


def test_fastv_is_registered_with_its_tags():
    info = registry._INFO["fastv"]
    assert info.where == "llm" and not info.trainable and info.needs_attention and info.summary


@pytest.mark.parametrize("backend", ["sdpa", "eager"])
@pytest.mark.parametrize("layer", [1, 2])
def test_keeping_every_image_token_is_the_plain_causal_forward(backend, layer):
    vlm = tiny_vlm(backend)
    ids, layouts, pix = batch(MIXED)
    fast = FastVModel(vlm, keep=V, layer=layer)
    assert_plain_causal_forward(fast, vlm, ids, layouts, pix)
    assert [k.tolist() for k in fast.last_kept] == [list(range(l.length)) for l in layouts]


@pytest.mark.parametrize("backend", ["sdpa", "eager"])
def test_dropping_after_the_last_layer_is_the_plain_forward_at_kept_positions(backend):
    vlm = tiny_vlm(backend)
    ids, layouts, pix = batch(MIXED)
    fast = FastVModel(vlm, keep=3, layer=LAYERS)
    with torch.no_grad():
        want = vlm(ids, layouts, pixels=pix, mask="causal").logits
        got = fast(ids, layouts, pixels=pix).logits
    for b, kept in enumerate(fast.last_kept):
        assert len(kept) == layouts[b].length - (V - 3) * len(layouts[b].frames)
        torch.testing.assert_close(got[b, kept], want[b, kept], atol=1e-5, rtol=0)
        dropped = sorted(set(range(layouts[b].length)) - set(kept.tolist()))
        assert (got[b, dropped] == 0).all()  # dropped positions are zero-filled


def eager_received_attention(vlm, ids, layouts, pix, layer):
    """Received attention at decoder layer `layer - 1` from transformers' own eager weights."""
    with torch.no_grad():
        attn = vlm(ids, layouts, pixels=pix, mask="causal", output_attentions=True).attentions[layer - 1]
    allowed = build_mask(layouts, "causal", ids.shape[1])[:, 0].float()
    return (attn.mean(dim=1) * allowed).sum(dim=1) / allowed.sum(dim=1)


@pytest.mark.parametrize("layer", [1, 2])
def test_keep_below_v_drops_the_least_attended_image_tokens(layer):
    vlm = tiny_vlm("eager")
    keep = 5
    specs = [(6, 2, 2), (3, 2, 1)]  # a two-frame clip and a shorter single image
    ids, layouts, pix = batch(specs, seed=3)
    fast = FastVModel(vlm, keep=keep, layer=layer)
    with torch.no_grad():
        plain = vlm(ids, layouts, pixels=pix, mask="causal").logits
        got = fast(ids, layouts, pixels=pix).logits
    received = eager_received_attention(vlm, ids, layouts, pix, layer)
    for b, l in enumerate(layouts):
        kept = set(fast.last_kept[b].tolist())
        assert fast.last_kept[b].tolist() == sorted(kept)
        text_positions = [p for p in range(l.length) if p not in set(l.image_positions())]
        assert set(text_positions) <= kept
        # our recomputed scores are transformers' eager attention, averaged the same way
        img = l.image_positions()
        torch.testing.assert_close(fast.last_scores[b][img], received[b, img], atol=1e-6, rtol=1e-5)
        for f in l.frames:
            span = list(f.image.range())
            kept_here = [p for p in span if p in kept]
            dropped_here = [p for p in span if p not in kept]
            assert len(kept_here) == keep and len(dropped_here) == V - keep
            assert received[b, dropped_here].max() < received[b, kept_here].min()
        # text after the image reads fewer image tokens from layer `layer` on: logits change
        later = list(range(l.text.start, l.length))
        assert (got[b, later] - plain[b, later]).abs().max() > 1e-3
        # BOS precedes every image token: unaffected by dropping
        torch.testing.assert_close(got[b, 0], plain[b, 0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("backend", ["sdpa", "eager"])
@pytest.mark.parametrize("layer", [1, 2])
def test_keep_below_v_equals_a_full_length_forward_hiding_the_dropped_tokens(backend, layer):
    """Reference without any gathering: every token stays at its original position, and
    from layer `layer` on the mask hides the tokens FastV dropped. Catches wrong position
    ids, a wrong restricted mask or a wrong scatter of the logits."""
    vlm = tiny_vlm(backend, seed=2)
    ids, layouts, pix = batch([(6, 2, 2), (3, 2, 1), (4, 1, 0)], seed=9)
    fast = FastVModel(vlm, keep=3, layer=layer)
    model = vlm.llm.model
    with torch.no_grad():
        got = fast(ids, layouts, pixels=pix).logits
        hidden = vlm.embed(ids, pixels=pix)
        pos = torch.arange(ids.shape[1]).expand(ids.shape[0], -1)
        cos_sin = model.rotary_emb(hidden, pos)
        full = build_mask(layouts, "causal", ids.shape[1])
        alive = torch.zeros(ids.shape, dtype=torch.bool)
        for b, k in enumerate(fast.last_kept):
            alive[b, k] = True
        hiding = full & alive[:, None, None, :]
        hiding |= torch.eye(ids.shape[1], dtype=torch.bool)  # rows of dropped tokens: never empty
        for i, layer_module in enumerate(model.layers):
            m = for_backend(full if i < layer else hiding, backend, hidden.dtype)
            hidden = layer_module(hidden, attention_mask=m, position_ids=pos, position_embeddings=cos_sin)
        want = vlm.llm.lm_head(model.norm(hidden))
    for b, k in enumerate(fast.last_kept):
        assert len(k) < layouts[b].length or not layouts[b].frames
        torch.testing.assert_close(got[b, k], want[b, k], atol=1e-5, rtol=0)


@pytest.mark.parametrize("backend", ["sdpa", "eager"])
def test_a_padded_batch_equals_each_sample_alone(backend):
    vlm = tiny_vlm(backend)
    ids, layouts, pix = batch([(8, 2, 2), (2, 1, 1), (4, 2, 0), (3, 3, 1)], seed=7)
    fast = FastVModel(vlm, keep=4, layer=2)
    with torch.no_grad():
        together = fast(ids, layouts, pixels=pix).logits
        kept_together = [k.clone() for k in fast.last_kept]
        for b, l in enumerate(layouts):
            alone = fast(ids[b:b + 1, :l.length], [l], pixels=[pix[b]]).logits
            assert fast.last_kept[0].tolist() == kept_together[b].tolist()
            torch.testing.assert_close(together[b, :l.length], alone[0], atol=1e-5, rtol=0)


def test_greedy_generation_runs_through_fastv():
    vlm = tiny_vlm("sdpa", seed=4)
    questions = [random_text(5, 1), random_text(1, 2), random_text(8, 3)]
    pix = images(3, seed=5)
    kwargs = dict(mode="causal", max_new_tokens=8, voco_tokens=0, return_logits=True)
    want, want_logits = greedy_generate(vlm, SPECIAL, questions, pix, **kwargs)
    got, got_logits = greedy_generate(FastVModel(vlm, keep=V, layer=2), SPECIAL, questions, pix, **kwargs)
    assert got == want and sum(map(len, want)) > 6
    for g, w in zip(got_logits, want_logits):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=0)
    fast = FastVModel(vlm, keep=2, layer=1)
    pruned = greedy_generate(fast, SPECIAL, questions, pix, **{**kwargs, "return_logits": False})
    assert len(pruned) == 3 and all(len(t) <= 8 for t in pruned)
    for k in fast.last_kept:  # the last step: 2 image tokens and every text token kept
        k = k.tolist()
        assert sum(1 <= i < 1 + V for i in k) == 2 and k[0] == 0 and k[3:] == list(range(1 + V, k[-1] + 1))


@pytest.mark.parametrize("layer", [1, 2])
def test_measured_flops_equal_the_analytic_fastv_flops(layer):
    vlm = tiny_vlm("sdpa")
    tokens, layout = assemble(random_text(9, 1), [], SPECIAL, image_tokens=V, voco_tokens=0, add_eos=False)
    ids, n = torch.tensor([tokens]), len(tokens)
    with torch.no_grad():
        emb = vlm.embed(ids, pixels=images(1, seed=2))
    measured = {}
    for keep in (V, V // 2):
        fast = FastVModel(vlm, keep=keep, layer=layer)
        measured[keep] = measured_flops(lambda: fast(inputs_embeds=emb, layouts=[layout]))
        assert measured[keep] == fastv_flops(vlm.cfg, VOCAB, n, V, keep, layer)
    # keep = V costs the plain forward plus the ranking's q/k projections and QK^T
    m = vlm.cfg.llm
    d, d_kv = m.hidden_size, m.kv_heads * m.hidden_size // m.heads
    assert measured[V] == config_flops(vlm.cfg, VOCAB, n, n) + 2 * n * d * (d + d_kv) + 2 * n * n * d
    # the saving is what the analytic formula says, and close to the paper's estimate
    saving = measured[V] - measured[V // 2]
    n_hat = n - V // 2
    per_layer = config_flops(vlm.cfg, VOCAB, n, n) - config_flops(vlm.cfg, VOCAB, n_hat, n_hat)
    assert saving == fastv_flops(vlm.cfg, VOCAB, n, V, V, layer) - fastv_flops(vlm.cfg, VOCAB, n, V, V // 2, layer)
    assert saving > 0 and saving < per_layer
    paper = fastv_paper_ratio(vlm.cfg, n, n_hat, layer)
    unpruned = fastv_paper_ratio(vlm.cfg, n, n, layer)
    assert unpruned.pruned == unpruned.full and paper.pruned < paper.full
    assert saving / measured[V] == pytest.approx(paper.reduction, rel=0.1)  # 0.215 vs 0.229, 0.113 vs 0.115


def test_paper_ratio_matches_its_formula():
    cfg = tiny_cfg(**{"llm.layers": 4})
    t, d, mm = 4, cfg.llm.hidden_size, cfg.llm.intermediate_size
    n, n_hat, k = 600, 300, 2
    f = lambda x: 4 * x * d * d + 2 * x * x * d + 2 * x * d * mm  # noqa: E731
    out = fastv_paper_ratio(cfg, n, n_hat, k)
    assert out.full == t * f(n) and out.pruned == k * f(n) + (t - k) * f(n_hat)
    assert out.ratio == pytest.approx(out.pruned / out.full) and 0 < out.reduction < 0.5


def test_bad_arguments_are_refused():
    vlm = tiny_vlm("sdpa")
    for kwargs, name in [(dict(keep=V, layer=0), "layer"), (dict(keep=V, layer=LAYERS + 1), "layer"),
                         (dict(keep=0), "keep"), (dict(keep=V + 1), "keep")]:
        with pytest.raises(ValueError, match=name):
            FastVModel(vlm, **kwargs)
    ids, layouts, pix = batch([(3, 1, 1)])
    fast = FastVModel(vlm, keep=4)
    for mode in ("voco", "video", build_mask(layouts, "causal")):
        with pytest.raises(ValueError, match="mask"):
            fast(ids, layouts, pixels=pix, mask=mode)
    with torch.no_grad():
        cache = vlm(ids, layouts, pixels=pix, mask="causal", use_cache=True).past_key_values
    assert cache.get_seq_length() > 0
    with pytest.raises(ValueError, match="cache"):
        fast(ids, layouts, pixels=pix, past_key_values=cache)
    with pytest.raises(ValueError):
        fastv_flops(vlm.cfg, VOCAB, 30, V, V + 1, 2)
    with pytest.raises(ValueError):
        fastv_flops(vlm.cfg, VOCAB, 30, V, 4, LAYERS + 1)
