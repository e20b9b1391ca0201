"""Cost accounting: measured FLOPs agree with the analytic formula, and Table 7's ordering holds."""

import pytest
import torch

from vocolab.core.presets import preset
from vocolab.core.layout import SpecialIds, assemble
from vocolab.inference.flops import analytic_flops, config_flops, measured_flops
from vocolab.inference.latency import latency_ms
from vocolab.inference.table7 import inference_costs
from vocolab.models.vlm import VoCoVLM

SPECIAL = SpecialIds(bos=1, eos=3, pad=0, image=4, voco=5)
VOCAB = 40
V = 16


def tiny_vlm(backend="sdpa", layers=2, kv_heads=2):
    torch.manual_seed(0)
    cfg = preset("nano", **{"data.image_size": 16, "data.patch_size": 4, "data.grid": 2, "data.max_objects": 4,
                            "llm.hidden_size": 32, "llm.layers": layers, "llm.heads": 4, "llm.kv_heads": kv_heads,
                            "llm.intermediate_size": 64, "llm.max_positions": 128,
                            "llm.attn_implementation": backend,
                            "vision.hidden_size": 32, "vision.heads": 2, "vision.intermediate_size": 64,
                            "vision.text_hidden_size": 32, "vision.projection_dim": 16})
    return VoCoVLM(cfg, SPECIAL, VOCAB).eval()


def image(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (1, 16, 16, 3), generator=g, dtype=torch.uint8)


@pytest.mark.parametrize("backend", ["eager", "sdpa"])
@pytest.mark.parametrize("kv_heads", [4, 2])  # plain and grouped-query attention
def test_measured_flops_match_the_analytic_formula(backend, kv_heads):
    vlm = tiny_vlm(backend, layers=3, kv_heads=kv_heads)
    k = 2
    tokens, layout = assemble([10, 11, 12], [13], SPECIAL, image_tokens=V, voco_tokens=k)
    ids = torch.tensor([tokens])
    pix = image()
    m = vlm.cfg.llm
    sizes = dict(layers=m.layers, hidden=m.hidden_size, intermediate=m.intermediate_size, heads=m.heads,
                 kv_heads=m.kv_heads, vocab=VOCAB)
    n = len(tokens)
    with torch.no_grad():
        emb = vlm.embed(ids, pixels=pix)
    llm_only = measured_flops(lambda: vlm(inputs_embeds=emb, layouts=[layout], mask="voco"))
    assert llm_only == pytest.approx(analytic_flops(**sizes, q_len=n, kv_len=n), rel=0.05)
    assert llm_only == pytest.approx(config_flops(vlm.cfg, VOCAB, n, n), rel=1e-9)
    with_vision = measured_flops(lambda: vlm(ids, [layout], pixels=pix, mask="voco"))
    assert with_vision == pytest.approx(config_flops(vlm.cfg, VOCAB, n, n, images=1), rel=0.05)
    assert with_vision > llm_only


def test_attention_flops_are_counted_under_cpu_sdpa_as_under_eager():
    eager, sdpa = tiny_vlm("eager"), tiny_vlm("sdpa")
    tokens, layout = assemble(list(range(6, 30)), [], SPECIAL, image_tokens=V, voco_tokens=1, add_eos=False)
    ids, pix = torch.tensor([tokens]), image()
    counts = [measured_flops(lambda m=m: m(ids, [layout], pixels=pix, mask="voco")) for m in (eager, sdpa)]
    assert counts[0] == counts[1]
    # the LLM's attention term (QK^T + AV over n x n pairs in every layer) is in there
    n, cfg = len(tokens), eager.cfg.llm
    without_attention = config_flops(eager.cfg, VOCAB, n, 0, images=1)
    assert counts[1] - without_attention == pytest.approx(2 * 2 * n * n * cfg.hidden_size * cfg.layers, rel=0.01)


def test_latency_ms_reports_ordered_percentiles():
    calls = []
    out = latency_ms(lambda: calls.append(sum(range(1000))), repeats=7, warmup=2)
    assert len(calls) == 9
    assert set(out) >= {"median", "p10", "p90"} and 0 <= out["p10"] <= out["median"] <= out["p90"]
    with pytest.raises(ValueError):
        latency_ms(lambda: None, repeats=0)


@pytest.mark.parametrize("k", [1, 2])
def test_inference_costs_reproduce_table_7_ordering(k):
    vlm = tiny_vlm("sdpa", layers=2)
    question = [10, 11, 12, 13]
    costs = inference_costs(vlm, image(), question, k, repeats=2, warmup=1)
    s = costs["settings"]
    none, full, voco = s["no_caching"], s["full_caching"], s["voco_caching"]
    assert voco["flops"] < full["flops"] < none["flops"]
    for row in s.values():
        assert row["flops"] == pytest.approx(row["flops_analytic"], rel=0.05)
        assert set(row["latency_ms"]) >= {"median", "p10", "p90"}
    assert (none["cached_tokens"], full["cached_tokens"], voco["cached_tokens"]) == (0, 1 + V + k, k)
    assert none["cache_bytes"] == 0
    assert full["cache_bytes"] / voco["cache_bytes"] == pytest.approx((1 + V + k) / k)
    m = vlm.cfg.llm
    assert voco["cache_bytes"] == m.layers * 2 * m.kv_heads * (m.hidden_size // m.heads) * 4 * k
    assert 0 < voco["flops_reduction"] < 1 and none["flops_reduction"] == 0
    assert voco["cache_bytes_reduction"] == pytest.approx(1 - k / (1 + V + k))
    assert full["precompute_flops"] == voco["precompute_flops"] > 0
    assert (costs["image_tokens"], costs["voco_tokens"], costs["question_tokens"]) == (V, k, 4)
    import json
    json.dumps(costs)  # ready for the results file's "cost" key


def test_training_flops_match_what_the_counter_measures():
    """The analytic FLOPs of a training step (3x the forward of the LLM and projector) against
    FlopCounterMode over one real step; the counter charges fused attention's backward a bit
    more (3.5x) and skips the input gradient of the projector's first layer, which the
    tolerance covers at this size."""
    from tiny import VOCAB, batch, tiny_vlm

    from vocolab.core.layout import labels_from_layouts
    from vocolab.data.batching import Batch
    from vocolab.inference.flops import measured_training_flops, training_flops

    vlm = tiny_vlm(**{"llm.hidden_size": 64, "llm.intermediate_size": 256}).train()
    ids, layouts, pixels = batch([(6, 2, 1), (5, 3, 1), (4, 2, 1)])
    with torch.no_grad():
        features = vlm.encode_images(torch.stack(pixels))
    labels = labels_from_layouts(ids, layouts)
    measured = measured_training_flops(
        lambda: vlm(ids, layouts, features=features, mask="causal", labels=labels).loss.backward())
    analytic = training_flops(vlm.cfg, VOCAB, Batch(ids, layouts, None, labels, features))
    assert measured == pytest.approx(analytic, rel=0.1)
    with_pixels = training_flops(vlm.cfg, VOCAB, Batch(ids, layouts, torch.stack(pixels), labels))
    assert with_pixels > analytic  # the frozen tower runs when features are not cached
