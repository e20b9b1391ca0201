"""VideoLLM-MoD (mixture-of-depths over vision tokens) on a tiny causal model.

* skipped vision tokens leave every MoD layer bit for bit unchanged; text and the
  selected tokens are computed (k per frame, every non-vision token);
* r = 1 with uniform selection (gate 1) is the plain causal forward, loss included;
* the MoD forward equals a full-length forward that hides the skipped tokens at the MoD
  layers and gates the computed vision tokens (positions, mask and scatter are right);
* the K/V each MoD layer writes is text + k per frame (from the real cache);
* learned routing trains the routers; random selection is reproducible from its seed;
* measured FLOPs (forward, and forward + backward) equal `mod_flops`, and r = 0.2
  interleaved costs at most ~0.7x the full forward on a video-sized input;
* training through MoDModule, greedy decoding, the study runner on a tiny config;
* bad r / layers / selection raise ValueError.
"""

import json

import pytest
import tiny
import torch
from tiny import (
    SPECIAL,
    VOCAB,
    V,
    assert_plain_causal_forward,
    assert_real_positions_close,
    images,
    random_text,
    tiny_cfg,
)

from vocolab.core.layout import assemble, labels_from_layouts
from vocolab.core.masks import build_mask, for_backend
from vocolab.data.batching import make_batch
from vocolab.inference.flops import config_flops, measured_flops, measured_training_flops
from vocolab.inference.generate import greedy_generate
from vocolab.models.vlm import VoCoVLM
from vocolab.training.mod import MoDModule
from vocolab.zoo.mod import MoDVLM
from vocolab.zoo.mod_config import MoDConfig, mod_layer_indices, selected_per_frame, uniform_offsets
from vocolab.zoo.mod_flops import mod_flops, mod_flops_ratio

LAYERS = 4
K = 1  # VoCo slots per frame: non-vision tokens inside the frames, always computed


def tiny_vlm(backend="sdpa", seed=0, layers=LAYERS):
    # frame embeddings for clips of up to 8 frames, the longest the FLOPs tests feed
    return tiny.tiny_vlm(backend, layers=layers, seed=seed, untie=True, gqa=True, **{"data.frames": 8})


def batch(specs, seed=0, voco=K):
    return tiny.batch(specs, seed, voco)


MIXED = [(6, 2, 3), (3, 2, 2), (4, 1, 0), (2, 3, 1)]  # clips of 3, 2, 1 frames, a text-only sample: padding


def vision_positions(layout):
    return set(layout.image_positions())


# -- configuration ---------------------------------------------------------------------------------


def test_layer_choices_and_k():
    assert mod_layer_indices(4, "all") == (0, 1, 2, 3)
    assert mod_layer_indices(4, "interleaved") == (1, 3)
    assert mod_layer_indices(6, "interleaved") == (1, 3, 5)
    assert mod_layer_indices(4, "deep") == (2, 3)
    assert mod_layer_indices(5, "deep") == (2, 3, 4)
    assert mod_layer_indices(4, [3, 0]) == (0, 3)
    assert [selected_per_frame(r, v) for r, v in [(0.2, 16), (0.2, 64), (0.3, 10), (1, 16), (0.01, 16)]] == \
        [4, 13, 3, 16, 1]
    assert uniform_offsets(16, 4).tolist() == [5, 7, 13, 15]  # the centres of a 2 x 2 cell grid
    assert uniform_offsets(16, 16).tolist() == list(range(16))
    assert uniform_offsets(64, 13).tolist() == [(2 * j + 1) * 64 // 26 for j in range(13)]  # no 13-cell grid
    assert MoDConfig().to_dict() == {"r": 0.2, "layers": "interleaved", "selection": "learned", "seed": 0}


def test_bad_arguments_raise():
    vlm = tiny_vlm()
    for r in (0, -0.1, 1.5, float("nan"), True, "0.2", None):
        with pytest.raises(ValueError, match="r="):
            MoDVLM(vlm, r=r)
    for layers in ("odd", "", [], [LAYERS], [-1], [1, 1], [1.0], 3):
        with pytest.raises(ValueError, match="layers"):
            MoDVLM(vlm, layers=layers)
    for selection in ("topk", "Learned", None):
        with pytest.raises(ValueError, match="selection"):
            MoDVLM(vlm, selection=selection)
    with pytest.raises(ValueError, match="layer"):
        MoDVLM(tiny_vlm(layers=1), layers="interleaved")  # a 1-layer LLM has no layer 1
    with pytest.raises(ValueError):
        MoDConfig(seed=1.5)
    mod = MoDVLM(vlm)
    ids, layouts, pix = batch([(3, 1, 1)])
    for mode in ("voco", "video", build_mask(layouts, "causal")):
        with pytest.raises(ValueError, match="mask"):
            mod(ids, layouts, pixels=pix, mask=mode)
    with torch.no_grad():
        cache = vlm(ids, layouts, pixels=pix, mask="causal", use_cache=True).past_key_values
    with pytest.raises(ValueError, match="cache"):
        mod(ids, layouts, pixels=pix, past_key_values=cache)
    with pytest.raises(ValueError, match="layout"):
        mod(ids, layouts * 2, pixels=pix)
    with pytest.raises(ValueError):
        mod_flops(vlm.cfg, VOCAB, 30, 1, V, V + 1, (1,))
    with pytest.raises(ValueError):
        mod_flops(vlm.cfg, VOCAB, 30, 1, V, 4, (LAYERS,))
    with pytest.raises(ValueError):
        MoDModule(tiny_cfg(), mask="voco")


def test_only_the_routers_are_new_parameters():
    vlm = tiny_vlm()
    plain = {id(p) for p in vlm.parameters()}
    d = vlm.cfg.llm.hidden_size
    learned = MoDVLM(vlm, layers="interleaved", selection="learned")
    new = [p for p in learned.parameters() if id(p) not in plain]
    assert sum(p.numel() for p in new) == 2 * (d + 1) and set(learned.routers) == {"1", "3"}
    for selection in ("random", "uniform"):
        assert {id(p) for p in MoDVLM(vlm, selection=selection).parameters()} == plain


# -- exactness ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sdpa", "eager"])
@pytest.mark.parametrize("layers", ["all", "interleaved"])
def test_r1_uniform_is_the_plain_causal_forward(backend, layers):
    vlm = tiny_vlm(backend)
    ids, layouts, pix = batch(MIXED)
    mod = MoDVLM(vlm, r=1.0, layers=layers, selection="uniform")
    assert_plain_causal_forward(mod, vlm, ids, layouts, pix)
    assert [r.layer for r in mod.records] == list(mod_layer_indices(LAYERS, layers))
    for rec in mod.records:  # every real token computed
        assert [rec.kept(b) for b in range(4)] == [list(range(l.length)) for l in layouts]


@pytest.mark.parametrize("selection", ["learned", "random", "uniform"])
@pytest.mark.parametrize("layers", ["all", "interleaved", "deep"])
def test_skipped_tokens_pass_every_mod_layer_bit_for_bit(selection, layers):
    vlm = tiny_vlm(seed=1)
    ids, layouts, pix = batch(MIXED, seed=3)
    mod = MoDVLM(vlm, r=0.2, layers=layers, selection=selection, seed=5)
    mod.trace = True
    with torch.no_grad():
        mod(ids, layouts, pixels=pix)
    assert [r.layer for r in mod.records] == list(mod_layer_indices(LAYERS, layers))
    for rec in mod.records:
        assert rec.before is not None and rec.after is not None
        for b, l in enumerate(layouts):
            selected = set(rec.selected_of(b))
            vision = vision_positions(l)
            skipped = sorted(vision - selected)
            assert len(skipped) == len(l.frames) * (V - 4) if vision else not skipped
            # skipped: exactly unchanged; computed (text and selected): changed
            assert torch.equal(rec.after[b, skipped], rec.before[b, skipped])
            computed = [p for p in range(l.length) if p not in skipped]
            changed = (rec.after[b, computed] != rec.before[b, computed]).any(-1)
            assert changed.all(), f"layer {rec.layer} sample {b}: some computed token did not change"


@pytest.mark.parametrize("selection", ["learned", "random", "uniform"])
def test_text_always_computed_and_k_vision_tokens_per_frame(selection):
    vlm = tiny_vlm(seed=2)
    ids, layouts, pix = batch(MIXED, seed=4)
    mod = MoDVLM(vlm, r=0.3, layers="all", selection=selection)
    k = selected_per_frame(0.3, V)
    with torch.no_grad():
        mod(ids, layouts, pixels=pix)
    for rec in mod.records:
        for b, l in enumerate(layouts):
            vision = vision_positions(l)
            kept = rec.kept(b)
            assert kept == sorted(kept)
            text_positions = [p for p in range(l.length) if p not in vision]  # BOS, VoCo slots, question, answer
            assert set(text_positions) <= set(kept)
            assert set(kept) - set(text_positions) == set(rec.selected_of(b))
            for f in l.frames:
                assert sum(p in f.image.range() for p in kept) == k
            assert len(kept) == mod.kv_tokens_per_layer(l)[rec.layer] == len(text_positions) + k * len(l.frames)


@pytest.mark.parametrize("backend", ["sdpa", "eager"])
def test_mod_equals_a_full_length_forward_hiding_the_skipped_tokens(backend):
    """Reference without gathering: every token stays at its position; at a MoD layer the
    layer runs on everything with the mask hiding the skipped tokens as keys, then the
    skipped tokens get their input back and the selected ones the router-gated update.
    Catches wrong position ids, a wrong restricted mask or a wrong scatter."""
    vlm = tiny_vlm(backend, seed=3)
    ids, layouts, pix = batch(MIXED, seed=8)
    mod = MoDVLM(vlm, r=0.2, layers="interleaved", selection="learned")
    model = vlm.llm.model
    with torch.no_grad():
        got = mod(ids, layouts, pixels=pix).logits
        records = {r.layer: r for r in mod.records}
        hidden = vlm.embed(ids, pixels=pix)
        pos = torch.arange(ids.shape[1]).expand(ids.shape[0], -1)
        cos_sin = model.rotary_emb(hidden, pos)
        full = build_mask(layouts, "causal", ids.shape[1])
        for i, layer in enumerate(model.layers):
            if i not in records:
                hidden = layer(hidden, attention_mask=for_backend(full, backend, hidden.dtype), position_ids=pos,
                               position_embeddings=cos_sin)
                continue
            alive = torch.zeros(ids.shape, dtype=torch.bool)
            selected = torch.zeros(ids.shape, dtype=torch.bool)
            for b, l in enumerate(layouts):
                alive[b, records[i].kept(b)] = True
                selected[b, records[i].selected_of(b)] = True
            hiding = (full & alive[:, None, None, :]) | torch.eye(ids.shape[1], dtype=torch.bool)
            out = layer(hidden, attention_mask=for_backend(hiding, backend, hidden.dtype), position_ids=pos,
                        position_embeddings=cos_sin)
            w = torch.sigmoid(mod.routers[str(i)](hidden))
            gated = hidden + w * (out - hidden)
            hidden = torch.where(selected[..., None], gated, torch.where(alive[..., None], out, hidden))
        want = vlm.llm.lm_head(model.norm(hidden))
    assert_real_positions_close(got, want, layouts)
    # and MoD really changed the answer logits compared with the plain model
    with torch.no_grad():
        plain = vlm(ids, layouts, pixels=pix, mask="causal").logits
    assert (got[0, layouts[0].text.start : layouts[0].length] - plain[0, layouts[0].text.start : layouts[0].length]
            ).abs().max() > 1e-3


def test_a_padded_batch_equals_each_sample_alone():
    vlm = tiny_vlm(seed=4)
    ids, layouts, pix = batch(MIXED, seed=6)
    mod = MoDVLM(vlm, r=0.25, layers="interleaved", selection="learned")
    with torch.no_grad():
        together = mod(ids, layouts, pixels=pix).logits
        kept_together = [[r.kept(b) for r in mod.records] for b in range(len(layouts))]
        for b, l in enumerate(layouts):
            alone = mod(ids[b : b + 1, : l.length], [l], pixels=[pix[b]]).logits
            assert [r.kept(0) for r in mod.records] == kept_together[b]
            torch.testing.assert_close(together[b, : l.length], alone[0], atol=1e-5, rtol=0)


# -- K/V ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layers", ["interleaved", "deep", "all"])
def test_kv_entries_per_layer_are_text_plus_selected_tokens(layers):
    vlm = tiny_vlm(seed=5)
    mod = MoDVLM(vlm, r=0.2, layers=layers, selection="learned")
    k = selected_per_frame(0.2, V)
    ids, layouts, pix = batch(MIXED, seed=2)
    with torch.no_grad():
        for b, l in enumerate(layouts):
            cache = mod(ids[b : b + 1, : l.length], [l], pixels=[pix[b]], use_cache=True).past_key_values
            entries = [layer.keys.shape[-2] for layer in cache.layers]
            assert [layer.values.shape[-2] for layer in cache.layers] == entries
            text_tokens = l.length - len(vision_positions(l))
            want = [text_tokens + k * len(l.frames) if i in mod.mod_layers else l.length for i in range(LAYERS)]
            assert entries == want == mod.kv_tokens_per_layer(l)
            if l.frames:
                assert sum(entries) < LAYERS * l.length


# -- training ------------------------------------------------------------------------------------------


def test_learned_routing_gets_gradients_into_the_routers():
    vlm = tiny_vlm(seed=6).train()
    ids, layouts, pix = batch(MIXED, seed=1)
    labels = labels_from_layouts(ids, layouts)
    mod = MoDVLM(vlm, r=0.2, layers="all", selection="learned")
    mod(ids, layouts, pixels=pix, labels=labels).loss.backward()
    for i in range(LAYERS - 1):
        router = mod.routers[str(i)]
        assert router.weight.grad is not None and router.weight.grad.abs().sum() > 0, f"router {i}"
        assert router.bias.grad.abs().sum() > 0
    # the last layer's vision outputs feed no scored logit: its gate gets no gradient (inherent)
    last = mod.routers[str(LAYERS - 1)].weight.grad
    assert last is None or last.abs().sum() == 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in vlm.llm.parameters())


def test_random_selection_is_reproducible_with_a_seed():
    vlm = tiny_vlm(seed=7)
    ids, layouts, pix = batch(MIXED, seed=2)

    def selections(mod):
        with torch.no_grad():
            mod(ids, layouts, pixels=pix)
        return [[r.selected_of(b) for b in range(len(layouts))] for r in mod.records]

    a, b, c = (MoDVLM(vlm, selection="random", seed=s) for s in (3, 3, 4))
    first = selections(a)
    assert first == selections(b)
    assert first != selections(c)
    assert selections(a) != first  # a new draw every forward
    a.reseed()
    assert selections(a) == first


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_mod_module_trains_llm_and_routers():
    cfg = tiny_cfg(**{"llm.layers": LAYERS, "train.batch_size": 2, "data.frames": 2})
    torch.manual_seed(0)
    module = MoDModule(cfg, r=0.25, layers="interleaved", selection="learned")
    assert isinstance(module.model, MoDVLM) and module.hparams["mod"]["selection"] == "learned"
    tok = module.model.vlm.special
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, 2, 16, 16, 3), generator=g, dtype=torch.uint8).numpy()

    class Tok:  # the word-hashing "tokenizer" make_batch needs: a list of texts in, their ids out
        def __call__(self, texts, add_special_tokens=False):
            return {"input_ids": [[6 + (sum(map(ord, w)) % 30) for w in text.split()] for text in texts]}

    data = make_batch(Tok(), tok, ["what moved", "which colour"], ["left", "red"], images,
                      image_tokens=V, voco_tokens=1)
    optimizer = module.configure_optimizers()["optimizer"]
    opt_params = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert {id(p) for p in module.model.router_parameters()} <= opt_params
    assert not any(id(p) in opt_params for p in module.model.vision.parameters())  # frozen tower
    before = [p.detach().clone() for p in module.model.router_parameters()]
    loss = module(data).loss
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert not torch.equal(before[0], module.model.routers["1"].weight)  # a non-final router moved
    assert module.training_step(data, 0).isfinite()  # logs the mean router gate
    # a checkpoint's hyper-parameters rebuild the same MoD model
    again = MoDModule(**{k: v for k, v in module.hparams.items()})
    assert again.model.config == module.model.config and again.model.mod_layers == (1, 3)


def test_greedy_generation_runs_through_mod():
    vlm = tiny_vlm(seed=8)
    questions = [random_text(5, 1), random_text(1, 2), random_text(8, 3)]
    pix = torch.stack([images(3, s) for s in range(3)])
    kwargs = dict(mode="causal", max_new_tokens=6, voco_tokens=K, return_logits=True)
    want, want_logits = greedy_generate(vlm, SPECIAL, questions, pix, **kwargs)
    got, got_logits = greedy_generate(MoDVLM(vlm, r=1.0, layers="all", selection="uniform"), SPECIAL, questions,
                                      pix, **kwargs)
    assert got == want
    for g_, w_ in zip(got_logits, want_logits):
        torch.testing.assert_close(g_, w_, atol=1e-5, rtol=0)
    short = greedy_generate(MoDVLM(vlm, r=0.2), SPECIAL, questions, pix, **{**kwargs, "return_logits": False})
    assert len(short) == 3 and all(len(t) <= 6 for t in short)


# -- FLOPs ---------------------------------------------------------------------------------------------


def video_input(vlm, frames=8, question=9):
    tokens, layout = assemble(random_text(question, 1), [], SPECIAL, frames=frames, image_tokens=V, voco_tokens=0,
                              add_eos=False)
    ids = torch.tensor([tokens])
    with torch.no_grad():
        emb = vlm.embed(ids, pixels=images(frames, 3)[None])
    return ids, layout, emb


@pytest.mark.parametrize("selection", ["learned", "uniform"])
def test_measured_flops_match_the_formula_and_save_at_least_30_percent(selection):
    vlm = tiny_vlm(seed=9)
    ids, layout, emb = video_input(vlm)
    n, frames = layout.length, len(layout.frames)
    mod = MoDVLM(vlm, r=0.2, layers="interleaved", selection=selection)
    full = measured_flops(lambda: vlm(inputs_embeds=emb, layouts=[layout], mask="causal"))
    got = measured_flops(lambda: mod(inputs_embeds=emb, layouts=[layout]))
    assert full == config_flops(vlm.cfg, VOCAB, n, n) == mod_flops(vlm.cfg, VOCAB, n, frames, V, V, (), router=False)
    assert got == mod.flops(n, frames) == mod_flops(vlm.cfg, VOCAB, n, frames, V, 4, (1, 3),
                                                    router=selection == "learned")
    ratio = got / full
    assert ratio <= 0.7, ratio  # 0.61 here: 8 frames x 16 tokens, 9 question tokens, 4 layers
    assert ratio == pytest.approx(mod_flops_ratio(vlm.cfg, VOCAB, n, frames, V, 0.2, "interleaved",
                                                  router=selection == "learned"), rel=1e-9)
    # r = 1, uniform: the full count (no router)
    assert measured_flops(lambda: MoDVLM(vlm, r=1.0, selection="uniform")(inputs_embeds=emb, layouts=[layout])) \
        == full


def test_measured_training_flops_match_the_formula():
    vlm = tiny_vlm(seed=10).train()
    ids, layout, emb = video_input(vlm)
    n, frames = layout.length, len(layout.frames)
    emb = emb.clone().requires_grad_()  # as with a trainable embedding table: dX of layer 0 is computed
    mod = MoDVLM(vlm, r=0.2, layers="interleaved", selection="learned")
    got = measured_training_flops(lambda: mod(inputs_embeds=emb, layouts=[layout], labels=ids).loss.backward())
    full = measured_training_flops(
        lambda: vlm(inputs_embeds=emb, layouts=[layout], mask="causal", labels=ids).loss.backward())
    assert got == mod.flops(n, frames, training=True)
    assert full == mod_flops(vlm.cfg, VOCAB, n, frames, V, V, (), router=False, training=True)
    assert got / full <= 0.7


# -- the study runner ----------------------------------------------------------------------------------


def test_mod_study_runs_on_a_tiny_config(tmp_path, monkeypatch):
    import vocolab.studies.mod as mod_study

    monkeypatch.setenv("VOCOLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("VOCOLAB_QUICK", "1")

    def fake_base(cfg, runs, data, progress=True):  # an untrained stand-in for the shared base model
        torch.manual_seed(0)
        from vocolab.data.tokenizer import build_tokenizer, special_ids

        tok = build_tokenizer(cfg.data)
        return VoCoVLM(cfg, special_ids(tok), len(tok)).eval()

    monkeypatch.setattr("vocolab.studies.common.base_model", fake_base)  # called by clip_start_model
    overrides = {"data.image_size": 16, "data.patch_size": 4, "data.grid": 2, "data.max_objects": 4,
                 "data.frames": 2, "data.train_clips": 8, "data.heldout_clips": 3, "llm.hidden_size": 32,
                 "llm.layers": 4, "llm.heads": 2, "llm.kv_heads": 2, "llm.intermediate_size": 64,
                 "llm.max_positions": 256, "vision.hidden_size": 32, "vision.heads": 2,
                 "vision.intermediate_size": 64, "vision.text_hidden_size": 32, "vision.projection_dim": 16,
                 "train.batch_size": 4}
    out = tmp_path / "mod"
    body = mod_study.run_mod_study("nano", out, seed=0, steps=2, limit=6, overrides=overrides, progress=False)
    by = {r["name"]: r for r in body["runs"]}
    assert set(by) == {"base", "blind", "full", "learned", "random", "uniform"} and not body["mod"]["failed"]
    assert body["mod"]["mod_layers"] == [1, 3] and body["mod"]["k_per_frame"] == 4
    for name in ("full", "learned", "random", "uniform"):
        r = by[name]
        assert 0 <= r["accuracy"] <= 1 and r["train_steps"] == 2 and len(r["step_times_ms"]) == 2
        c = r["cost"]
        assert c["prefill_flops"] == c["prefill_flops_analytic"]
        assert c["train_flops_per_step"] > 0 and c["saved_activation_bytes"] > 0
    assert by["learned"]["router_params"] == 2 * 33 and by["random"]["router_params"] == 0
    for name in ("learned", "random", "uniform"):
        c = by[name]["cost"]
        assert c["train_flops_ratio"] < 0.85 and c["kv_ratio"] < 1 and c["prefill_flops_ratio"] < 1
        assert c["saved_activation_bytes"] < by["full"]["cost"]["saved_activation_bytes"]
    for name in ("results.json", "table.md", "mod.png"):
        assert (out / name).stat().st_size > 0
    assert json.loads((out / "results.json").read_text())["mod"]["r"] == 0.2
    assert "| learned |" in (out / "table.md").read_text()

    def never():
        raise AssertionError("finished cells must be skipped on a rerun")

    monkeypatch.setattr(mod_study, "saved_activation_bytes", lambda *a, **k: never())
    again = mod_study.run_mod_study("nano", out, seed=0, steps=2, limit=6, overrides=overrides, progress=False)
    assert [r["accuracy"] for r in again["runs"]] == [r["accuracy"] for r in body["runs"]]
    assert body["mod"]["train_clips"] == 8
    # more training clips (`--train-clips`) are other cells, the config (and so the scene model) the same
    more = mod_study.run_mod_study("nano", out, seed=0, steps=2, limit=6, overrides=overrides, progress=False,
                                   variants=("full",), train_clips=5)
    assert more["mod"]["train_clips"] == 5 and more["mod"]["failed"] == ["mod-full"]
    assert more["config"] == body["config"]
    with pytest.raises(ValueError, match="train_clips"):
        mod_study.run_mod_study("nano", out, train_clips=0, overrides=overrides)


def test_cli_mod_passes_the_training_clips(monkeypatch):
    import vocolab.studies.mod as mod_study
    from vocolab import cli

    seen = {}
    monkeypatch.setattr(mod_study, "run_mod_study", lambda *a, **kw: seen.update(args=a, kwargs=kw))
    assert cli.main(["mod", "--out", "x", "--steps", "3", "--train-clips", "40", "--r", "0.5",
                     "--off-lattice-steps", "6"]) == 0
    assert seen["args"] == ("nano", "x")
    assert {k: seen["kwargs"][k] for k in ("steps", "train_clips", "r", "off_lattice_steps")} == \
        {"steps": 3, "train_clips": 40, "r": 0.5, "off_lattice_steps": 6}
