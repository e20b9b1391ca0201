"""The `pre` compressors of the zoo: shapes, tags, gradients and each method's defining property.

Tiny config only (V = 16 patches on a 4x4 grid, Dv = 32, D_llm = 32); inputs are random
features, except the PruMerge parity test, which runs a tiny `transformers` CLIP.
"""

import pytest
import torch
from einops import reduce
from tiny import V, tiny_cfg
from transformers import CLIPVisionModel

from vocolab.models.vision import patch_features, vision_config
from vocolab.zoo.pooling import cell_bounds, pool_grid, region_mask
from vocolab.zoo.prumerge import prumerge_inputs
from vocolab.zoo.registry import build_compressor, method_info, methods

TAGS = {  # name: (trainable, needs_query, needs_attention, adaptive)
    "avgpool": (True, False, False, False),
    "uniform": (False, False, False, False),
    "random": (False, False, False, False),
    "qformer": (True, False, False, False),
    "perceiver": (True, False, False, False),
    "quecc": (True, True, False, False),
    "prumerge": (False, False, True, True),
}
MINE = sorted(TAGS)
KS = (1, 2, 4, 8, 16)


def inputs(name, cfg, n=2, seed=0):
    """Random features (and the query / extras the method asks for)."""
    g = torch.Generator().manual_seed(seed)
    layers = build_compressor(name, cfg, 1).vision_layers  # None: one CLIP layer
    width = cfg.vision.hidden_size * (len(layers) if layers else 1)
    v = cfg.data.image_tokens
    kwargs = {"features": torch.randn(n, v, width, generator=g)}
    info = method_info(name)
    if info.needs_query:
        kwargs["query"] = torch.randn(n, cfg.llm.hidden_size, generator=g)
    if info.needs_attention:
        kwargs["extras"] = {"cls_attention": torch.rand(n, v, generator=g).softmax(-1),
                            "keys": torch.randn(n, v, cfg.vision.hidden_size, generator=g)}
    return kwargs


def matches(out, features):
    """`[K, V]` bool: out row k is exactly feature row v."""
    return (out[:, None] == features[None]).all(-1)


# -- registry, shapes, parameters ----------------------------------------------------------


def test_methods_lists_tags():
    listed = methods()
    for name, (trainable, query, attention, adaptive) in TAGS.items():
        info = listed[name]
        assert info.where == "pre" and info.summary
        assert (info.trainable, info.needs_query, info.needs_attention, info.adaptive) == \
               (trainable, query, attention, adaptive), name


@pytest.mark.parametrize("name", MINE)
def test_shapes_for_every_k(name):
    cfg = tiny_cfg()
    for k in KS:
        comp = build_compressor(name, cfg, k)
        assert comp.k == k
        out = comp(**inputs(name, cfg))
        if method_info(name).adaptive:
            assert isinstance(out, list) and len(out) == 2
            for o in out:
                assert o.dim() == 2 and o.shape[1] == cfg.vision.hidden_size and 1 <= o.shape[0] <= k
        else:
            assert out.shape == (2, k, cfg.vision.hidden_size), (name, k)
            assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", MINE)
@pytest.mark.parametrize("k", [0, V + 1])
def test_bad_k_raises(name, k):
    with pytest.raises(ValueError, match="K="):
        build_compressor(name, tiny_cfg(), k)


def test_unknown_method_lists_names():
    with pytest.raises(ValueError, match="avgpool.*perceiver.*prumerge.*qformer.*quecc.*random.*uniform"):
        build_compressor("nope", tiny_cfg(), 4)


@pytest.mark.parametrize("name", MINE)
def test_parameters_and_gradients(name):
    cfg = tiny_cfg()
    comp = build_compressor(name, cfg, 4)
    params = list(comp.named_parameters())
    if not method_info(name).trainable:
        assert params == []
        return
    assert params
    out = comp(**inputs(name, cfg))
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    (out * weight).sum().backward()  # a random read-out: LayerNorm outputs always sum to ~0
    for pname, p in params:
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}: no gradient reaches {pname}"


def test_wrong_feature_width_raises():
    cfg = tiny_cfg()
    with pytest.raises(ValueError, match=r"\[N, 16, 32\]"):
        build_compressor("avgpool", cfg, 4)(torch.randn(2, V, 33))
    with pytest.raises(ValueError, match="expected 64"):
        build_compressor("quecc", cfg, 4)(torch.randn(2, V, 32), query=torch.randn(2, 32))


# -- grid geometry and pooling ---------------------------------------------------------


def test_pool_grid():
    expected = {1: (1, 1), 2: (1, 2), 3: (1, 3), 4: (2, 2), 8: (2, 4), 12: (3, 4), 16: (4, 4), 32: (4, 8)}
    assert {k: pool_grid(k) for k in expected} == expected
    with pytest.raises(ValueError, match="k=0"):
        pool_grid(0)
    assert cell_bounds(8, 3) == [(0, 3), (2, 6), (5, 8)]  # as adaptive pooling cuts it


def test_k_whose_grid_does_not_fit_raises():
    with pytest.raises(ValueError, match="1x7"):  # 7 cells in a row on a 4x4 patch grid
        build_compressor("avgpool", tiny_cfg(), 7)


def test_avgpool_is_plain_pooling_at_init():
    cfg = tiny_cfg()
    x = torch.randn(2, V, cfg.vision.hidden_size)
    for k, (h, w) in {1: (1, 1), 2: (1, 2), 4: (2, 2), 8: (2, 4), 16: (4, 4)}.items():
        expected = reduce(x, "n (h a w b) c -> n (h w) c", "mean", h=h, w=w, a=4 // h)
        torch.testing.assert_close(build_compressor("avgpool", cfg, k)(x), expected)


# -- dropping ------------------------------------------------------------------------------


def test_uniform_keeps_cell_centres():
    cfg = tiny_cfg()
    x = torch.randn(2, V, cfg.vision.hidden_size)
    expected = {1: [10], 2: [9, 11], 4: [5, 7, 13, 15], 16: list(range(16))}
    for k, index in expected.items():
        out = build_compressor("uniform", cfg, k)(x)
        assert torch.equal(out, x[:, index]), k


@pytest.mark.parametrize("k", KS)
def test_random_keeps_distinct_rows_in_order(k):
    cfg = tiny_cfg()
    x = torch.randn(3, V, cfg.vision.hidden_size)
    out = build_compressor("random", cfg, k)(x)
    for n in range(3):
        hit = matches(out[n], x[n])
        assert (hit.sum(1) == 1).all()  # every output row is an exact copy of one patch row
        index = hit.float().argmax(1)
        assert (index.diff() > 0).all()  # distinct, original order


def test_random_is_reproducible():
    cfg = tiny_cfg()
    x = torch.randn(4, V, cfg.vision.hidden_size)
    a, b = build_compressor("random", cfg, 4), build_compressor("random", cfg, 4)
    first = a(x)
    assert torch.equal(first, b(x))  # same seed, same picks
    assert not torch.equal(first, a(x))  # the generator advances: later batches differ
    assert not torch.equal(first[0], first[1])  # images of one batch get their own picks


# -- QueCC ---------------------------------------------------------------------------------


def test_quecc_depends_on_query_and_requires_it():
    cfg = tiny_cfg()
    comp = build_compressor("quecc", cfg, 4)
    kw = inputs("quecc", cfg)
    out = comp(**kw)
    assert not torch.allclose(out, comp(kw["features"], query=kw["query"] + 1.0))
    with pytest.raises(ValueError, match="query is required"):
        comp(kw["features"])
    with pytest.raises(ValueError, match="query must be"):
        comp(kw["features"], query=torch.randn(2, 31))


@pytest.mark.parametrize("overrides,k", [({}, 4), ({}, 2), ({"data.image_size": 32}, 3)])
def test_quecc_token_reads_only_its_cell(overrides, k):
    cfg = tiny_cfg(**overrides)
    comp = build_compressor("quecc", cfg, k).eval()
    kw = inputs("quecc", cfg)
    cells = region_mask(cfg.data.image_tokens, k)
    outside = ~cells[0]
    moved = kw["features"].clone()
    moved[:, outside] += 3.0 * torch.randn_like(moved[:, outside])
    with torch.no_grad():
        before, after = comp(**kw), comp(moved, query=kw["query"])
    torch.testing.assert_close(after[:, 0], before[:, 0], rtol=0, atol=1e-6)
    assert not torch.allclose(after[:, 1:], before[:, 1:])  # the other cells did see the change


# -- PruMerge ------------------------------------------------------------------------------


def prumerge_case(n=2, seed=0, planted=(6,)):
    g = torch.Generator().manual_seed(seed)
    attn = 0.05 + 0.01 * torch.rand(n, V, generator=g)
    attn[:, list(planted)] = torch.linspace(0.5, 0.9, len(planted))
    return (torch.randn(n, V, 32, generator=g),
            {"cls_attention": attn, "keys": torch.randn(n, V, 32, generator=g)})


def test_prumerge_keeps_planted_outlier_and_merges_neighbours():
    cfg = tiny_cfg()
    x, extras = prumerge_case()
    alone = build_compressor("prumerge", cfg, 4)
    alone.neighbours = 0
    for n, out in enumerate(alone(x, extras=extras)):
        assert torch.equal(out, x[n, [6]])  # only the outlier, unchanged
    merged = build_compressor("prumerge", cfg, 4)(x, extras=extras)
    for n, out in enumerate(merged):
        keys, attn = extras["keys"][n], extras["cls_attention"][n]
        others = torch.tensor([v for v in range(V) if v != 6])
        sim = torch.nn.functional.cosine_similarity(keys[6][None], keys[others], dim=-1)
        group = torch.cat([torch.tensor([6]), others[sim.topk(8).indices]])
        expected = (attn[group, None] * x[n, group]).sum(0) / attn[group].sum()
        torch.testing.assert_close(out, expected[None])


def test_prumerge_caps_at_k_and_keeps_at_least_one():
    cfg = tiny_cfg()
    x, extras = prumerge_case(planted=(4, 9, 14))
    loose = build_compressor("prumerge", cfg, 8)
    loose.neighbours = 0
    for n, out in enumerate(loose(x, extras=extras)):
        assert torch.equal(out, x[n, [4, 9, 14]])  # the three outliers, no more: K_i < K
    comp = build_compressor("prumerge", cfg, 2)
    comp.neighbours = 0
    for n, out in enumerate(comp(x, extras=extras)):
        assert torch.equal(out, x[n, [9, 14]])  # the two highest of three outliers, in order
    flat = {"cls_attention": torch.full((2, V), 1.0 / V), "keys": extras["keys"]}
    assert [o.shape[0] for o in comp(x, extras=flat)] == [1, 1]  # no outlier: the top-1


def test_prumerge_requires_extras():
    comp = build_compressor("prumerge", tiny_cfg(), 4)
    with pytest.raises(ValueError, match="cls_attention"):
        comp(torch.randn(2, V, 32))
    with pytest.raises(ValueError, match="neighbours"):
        type(comp)(tiny_cfg(), 4, neighbours=-1)


def tiny_clip(layers=3):
    torch.manual_seed(0)
    model = CLIPVisionModel(vision_config(tiny_cfg(**{"vision.layers": layers})))
    model.set_attn_implementation("eager")
    return model.eval()


def test_prumerge_inputs_match_clip_attentions():
    model = tiny_clip()
    pixels = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        attentions = model(pixel_values=pixels, output_attentions=True).attentions
    for layer, block in ((-2, 1), (-1, 2), (1, 0), (2, 1)):  # hidden_states[i] is encoder layer i-1's output
        seen = []
        layers = getattr(model, "vision_model", model).encoder.layers  # flattened in transformers 5
        hook = layers[block].self_attn.k_proj.register_forward_hook(
            lambda mod, args, out: seen.append(out))
        got = prumerge_inputs(model, pixels, layer=layer)
        hook.remove()
        expected = attentions[block][:, :, 0, 1:].mean(1)
        torch.testing.assert_close(got["cls_attention"], expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(got["keys"], seen[0][:, 1:], rtol=0, atol=1e-6)
        assert got["keys"].shape == (2, V, 32)
    for bad in (0, -4, 4):
        with pytest.raises(ValueError, match=f"layer={bad}"):
            prumerge_inputs(model, pixels, layer=bad)


def test_prumerge_runs_on_clip_features():
    model = tiny_clip(layers=2)
    pixels = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        feats = patch_features(model, pixels, feature_layer=-2)
    out = build_compressor("prumerge", tiny_cfg(), 8)(feats, extras=prumerge_inputs(model, pixels, layer=-2))
    assert len(out) == 3 and all(1 <= o.shape[0] <= 8 and o.shape[1] == 32 for o in out)
