"""Model pieces: mini CLIP, projector, mini LLaMA and VoCoVLM's embedding, labels and loss.

Tiny configs and fake special ids only (no tokenizer, nothing downloaded); the parity
tests compare against the plain `transformers` models vocolab wraps (minGPT-style).
"""

import numpy as np
import pytest
import torch
from tiny import SPECIAL, VOCAB, V, tiny_cfg
from transformers import CLIPVisionModel, LlamaForCausalLM

from vocolab.core.layout import assemble, labels_from_layouts, pad_batch
from vocolab.models.frame_deltas import FrameDeltas
from vocolab.models.llm import llama_config
from vocolab.models.projector import Projector, sincos_2d, sincos_frames
from vocolab.models.vision import build_clip, clip_config, patch_features, pixels_to_tensor, vision_config
from vocolab.models.vlm import VoCoVLM


def tiny_vlm(seed=0, **overrides):
    torch.manual_seed(seed)
    return VoCoVLM(tiny_cfg(**overrides), SPECIAL, VOCAB).eval()


def images(n, seed=0, frames=None):
    g = torch.Generator().manual_seed(seed)
    shape = (n, 16, 16, 3) if frames is None else (n, frames, 16, 16, 3)
    return torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)


# -- vision --------------------------------------------------------------------------------


def test_clip_config_follows_cfg_and_pools_at_our_eos():
    cfg = tiny_cfg()
    cc = clip_config(cfg, VOCAB, eos_id=SPECIAL.eos, pad_id=SPECIAL.pad)
    v, t = cc.vision_config, cc.text_config
    assert (v.image_size, v.patch_size, v.hidden_size, v.num_hidden_layers) == (16, 4, 32, cfg.vision.layers)
    assert (t.vocab_size, t.hidden_size, t.eos_token_id, t.pad_token_id) == (VOCAB, 32, 3, 0)
    assert cc.projection_dim == 16 and t.max_position_embeddings >= 64
    assert vision_config(cfg).to_dict() == v.to_dict()

    torch.manual_seed(0)
    clip = build_clip(cfg, VOCAB, SPECIAL.eos, SPECIAL.pad).eval()
    ids = torch.tensor([[1, 20, 30, 3, 0, 0], [1, 39, 3, 0, 0, 0]])  # 39 > eos: argmax pooling would be wrong
    out = clip.text_model(input_ids=ids, attention_mask=(ids != 0).long())
    assert torch.equal(out.pooler_output[0], out.last_hidden_state[0, 3])
    assert torch.equal(out.pooler_output[1], out.last_hidden_state[1, 2])


def test_clip_config_refuses_legacy_eos_id():
    with pytest.raises(ValueError, match="eos_id == 2"):
        clip_config(tiny_cfg(), VOCAB, eos_id=2, pad_id=0)


def test_pixels_to_tensor_layout_and_normalisation():
    img = np.zeros((2, 16, 16, 3), dtype=np.uint8)
    img[..., 0] = 255
    x = pixels_to_tensor(img)
    assert x.shape == (2, 3, 16, 16) and x.dtype == torch.float32
    assert torch.allclose(x[:, 0], torch.full((2, 16, 16), (1 - 0.48145466) / 0.26862954))
    assert pixels_to_tensor(images(2, frames=3)).shape == (2, 3, 3, 16, 16)
    with pytest.raises(ValueError):
        pixels_to_tensor(torch.zeros(2, 16, 16, 3))  # float: not uint8


def test_patch_features_equal_clip_penultimate_layer_without_cls():
    torch.manual_seed(0)
    vision = CLIPVisionModel(vision_config(tiny_cfg())).eval()
    x = pixels_to_tensor(images(3))
    feats = patch_features(vision, x)
    ref = vision(pixel_values=x, output_hidden_states=True).hidden_states[-2][:, 1:]
    assert feats.shape == (3, V, 32)
    torch.testing.assert_close(feats, ref, atol=0, rtol=0)


def test_trained_clip_tower_loads_into_the_vlm():
    cfg = tiny_cfg()
    torch.manual_seed(1)
    clip = build_clip(cfg, VOCAB, SPECIAL.eos, SPECIAL.pad).eval()
    vlm = tiny_vlm()
    vlm.load_vision_from_clip(clip)
    x = images(2)
    torch.testing.assert_close(vlm.encode_images(x), patch_features(clip.vision_model, pixels_to_tensor(x)))
    # float [N, 3, H, W] input gives the same features as uint8 [N, H, W, 3]
    torch.testing.assert_close(vlm.encode_images(pixels_to_tensor(x)), vlm.encode_images(x))
    other = build_clip(tiny_cfg(**{"vision.hidden_size": 64}), VOCAB, SPECIAL.eos, SPECIAL.pad)
    with pytest.raises(ValueError, match="different vision config"):
        vlm.load_vision_from_clip(other)


def test_frozen_vision_tower_runs_without_autograd():
    vlm = tiny_vlm()
    vlm.vision.requires_grad_(False)
    assert not vlm.encode_images(images(1)).requires_grad
    vlm.vision.requires_grad_(True)
    assert vlm.encode_images(images(1)).requires_grad


# -- projector and LLM ----------------------------------------------------------------------


def test_projector_is_mlp2x_gelu():
    proj = Projector(8, 16)
    assert [type(m).__name__ for m in proj.children()] == ["Linear", "GELU", "Linear"]
    assert proj(torch.randn(2, 5, 8)).shape == (2, 5, 16)
    assert proj.positions is None


def test_projector_position_embedding_marks_where_each_patch_is():
    torch.manual_seed(0)
    plain, placed = Projector(8, 16), Projector(8, 16, positions=5)
    placed.load_state_dict(plain.state_dict() | {"positions": placed.positions.detach()})
    x = torch.randn(3, 5, 8)
    torch.testing.assert_close(placed(x), plain(x))  # zero at initialisation: the plain projector
    with torch.no_grad():
        placed.positions.normal_()
    same = x[:, :1].expand(3, 5, 8)  # one feature at every position: outputs now differ by position
    out = placed(same)
    torch.testing.assert_close(out - plain(same), placed.positions.expand(3, 5, 16))
    assert not torch.allclose(out[:, 0], out[:, 1])
    out.sum().backward()
    assert placed.positions.grad is not None and placed.positions.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"\[\.\.\., 5, 8\]"):
        placed(torch.randn(3, 4, 8))
    # with a zoo compressor the LLM sees K pooled tokens, not V patches: no per-patch embedding
    pooled = tiny_vlm(**{"llm.image_positions": True, "compress.method": "avgpool", "compress.tokens": 4})
    assert pooled.projector.positions is None


def test_sincos_start_codes_rows_and_columns():
    code = sincos_2d(4, 16, rms=0.08)
    assert code.shape == (16, 16) and abs(code.pow(2).mean().sqrt().item() - 0.08) < 1e-6
    rows, cols = code[:, :8].reshape(4, 4, 8), code[:, 8:].reshape(4, 4, 8)
    torch.testing.assert_close(rows, rows[:, :1].expand(4, 4, 8))  # the row half is shared along a row
    torch.testing.assert_close(cols, cols[:1].expand(4, 4, 8))  # the column half along a column
    assert torch.cdist(code, code).add(torch.eye(16)).min() > 0.01  # every patch has its own code
    with pytest.raises(ValueError, match="multiple of 4"):
        sincos_2d(4, 18, rms=1.0)
    # the VLM starts its per-patch embedding from the code (the default), from zeros when asked
    vlm = tiny_vlm(**{"llm.image_positions": True})
    torch.testing.assert_close(vlm.projector.positions.detach(), sincos_2d(4, 32, rms=vlm.cfg.llm.init_std))
    zeros = tiny_vlm(**{"llm.image_positions": True, "llm.image_positions_init": "zeros"})
    assert zeros.projector.positions.abs().sum() == 0
    with pytest.raises(ValueError, match="image_positions_init"):
        tiny_cfg(**{"llm.image_positions_init": "random"})


def test_llama_config_from_cfg():
    cfg = tiny_cfg(**{"llm.rope_theta": 5000.0, "llm.attn_implementation": "eager"})
    lc = llama_config(cfg, VOCAB, SPECIAL)
    assert lc.rope_parameters["rope_theta"] == 5000.0
    assert (lc.hidden_size, lc.num_hidden_layers, lc.num_key_value_heads) == (32, 2, 2)
    assert (lc.bos_token_id, lc.eos_token_id, lc.pad_token_id) == (1, 3, 0)
    assert lc.tie_word_embeddings and lc._attn_implementation == "eager"
    with pytest.raises(ValueError, match="special ids"):
        llama_config(cfg, 5, SPECIAL)  # voco id 5 does not fit a vocab of 5


def test_text_only_logits_equal_plain_llama():
    """Parity: no image tokens + causal mask == LlamaForCausalLM with the same weights, no mask."""
    vlm = tiny_vlm()
    ref = LlamaForCausalLM(vlm.llm.config).eval()
    ref.load_state_dict(vlm.llm.state_dict())
    seqs = [assemble([10, 11, 12], [13, 14], SPECIAL, frames=0), assemble([20, 21, 22], [23, 24], SPECIAL, frames=0)]
    ids = pad_batch([s for s, _ in seqs], SPECIAL.pad)
    layouts = [l for _, l in seqs]
    with torch.no_grad():
        ours = vlm(ids, layouts, mask="causal").logits
        theirs = ref(input_ids=ids).logits
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


# -- embedding ----------------------------------------------------------------------------


def _image_and_text_batch():
    a, la = assemble([10, 11], [12], SPECIAL, image_tokens=V, voco_tokens=1)
    b, lb = assemble([10, 11, 13, 14], [12, 15], SPECIAL, frames=0)
    c, lc = assemble([16], [17], SPECIAL, image_tokens=V, voco_tokens=2)
    return pad_batch([a, b, c], SPECIAL.pad), [la, lb, lc]


def tiny_vlm_with_positions(on: bool) -> VoCoVLM:
    """The tiny VLM, with random (not zero) per-patch position embeddings when `on`."""
    vlm = tiny_vlm(**{"llm.image_positions": on})
    if on:
        with torch.no_grad():
            vlm.projector.positions.normal_()
    return vlm


@pytest.mark.parametrize("positions", [False, True])
def test_embed_places_projected_features_in_image_slots(positions):
    vlm = tiny_vlm_with_positions(positions)
    assert (vlm.projector.positions is not None) == positions
    ids, layouts = _image_and_text_batch()
    pix = images(3)
    with torch.no_grad():
        emb = vlm.embed(ids, pixels=pix)
        tokens = vlm.llm.get_input_embeddings()(ids)
        feats = vlm.encode_images(pix)
        for b in (0, 2):
            img = layouts[b].frames[0].image
            torch.testing.assert_close(emb[b, img.start:img.stop], vlm.projector(feats[b]))
        text = (ids != SPECIAL.image) & (ids != SPECIAL.voco)  # VoCo tokens get their slot's embedding too
        torch.testing.assert_close(emb[text], tokens[text], atol=0, rtol=0)
        # the same batch from precomputed features, packed tensors and per-sample lists
        for kwargs in ({"features": feats}, {"pixels": pix[[0, 2]]}, {"features": feats[[0, 2]]},
                       {"pixels": [pix[0], None, pix[2].numpy()]}, {"features": [feats[0], None, feats[2]]}):
            torch.testing.assert_close(vlm.embed(ids, **kwargs), emb)


@pytest.mark.parametrize("positions", [False, True])
def test_embed_video_frames_fill_slots_in_order(positions):
    vlm = tiny_vlm_with_positions(positions)  # every frame gets the same per-patch embedding
    ids, layout = assemble([10], [12], SPECIAL, frames=2, image_tokens=V, voco_tokens=1)
    ids = torch.tensor([ids])
    clip = images(1, frames=2)
    with torch.no_grad():
        emb = vlm.embed(ids, pixels=clip)
        feats = vlm.encode_images(clip[0])
        for t, frame in enumerate(layout.frames):  # frame t >= 1 adds its frame embedding
            added = vlm.frame_positions[t - 1] if t else 0
            torch.testing.assert_close(emb[0, frame.image.start:frame.image.stop], vlm.projector(feats[t]) + added)


def test_embed_refuses_mismatched_image_inputs():
    vlm = tiny_vlm()
    ids, _ = _image_and_text_batch()
    feats = torch.randn(3, V, 32)
    text_ids = torch.tensor([[1, 10, 11, 3]])
    cases = [
        dict(input_ids=ids),                                          # image slots, no images
        dict(input_ids=ids, features=torch.randn(3, V - 1, 32)),       # wrong patch count
        dict(input_ids=ids, features=torch.randn(3, 2, V, 32)),        # two frames for one slot set
        dict(input_ids=ids, features=torch.randn(3, V, 8)),            # wrong feature width
        dict(input_ids=ids, features=torch.randn(4, V, 32)),           # neither B nor #image samples
        dict(input_ids=ids, features=[feats[0], feats[1], feats[2]]),  # text-only sample given an entry
        dict(input_ids=ids, features=[feats[0], None, None]),          # image sample given None
        dict(input_ids=ids, pixels=images(3), features=feats),         # both
        dict(input_ids=text_ids, features=feats[:1]),                  # features but no image slot
    ]
    for kwargs in cases:
        with pytest.raises(ValueError):
            vlm.embed(**kwargs)


# -- labels, loss, bookkeeping ---------------------------------------------------------------


def test_labels_keep_only_the_answer_span():
    ids, layouts = _image_and_text_batch()
    labels = labels_from_layouts(ids, layouts)
    for b, layout in enumerate(layouts):
        keep = torch.zeros(ids.shape[1], dtype=torch.bool)
        keep[layout.answer.start:layout.answer.stop] = True
        assert torch.equal(labels[b, keep], ids[b, keep])
        assert (labels[b, ~keep] == -100).all()
        assert labels[b, layout.answer.stop - 1] == SPECIAL.eos
    with pytest.raises(ValueError):
        labels_from_layouts(ids[:, :5], layouts)


def test_loss_is_finite_and_a_few_steps_reduce_it():
    vlm = tiny_vlm().train()
    vlm.vision.requires_grad_(False)
    ids, layouts = _image_and_text_batch()
    labels = labels_from_layouts(ids, layouts)
    pix = images(3)
    opt = torch.optim.AdamW([p for p in vlm.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(6):
        loss = vlm(ids, layouts, pixels=pix, labels=labels).loss
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5, losses


def test_parameter_report_counts_components_once():
    vlm = tiny_vlm()
    vlm.vision.requires_grad_(False)
    r = vlm.parameter_report()
    assert r["total"] == r["vision"] + r["projector"] + r["llm"] + r["voco_slots"] + r["frame_positions"] + \
        r["frame_deltas"]
    assert r["projector"] == 32 * 32 + 32 + 32 * 32 + 32 + V * 32  # two linears, a position per patch
    assert r["voco_slots"] == V * 32
    assert r["frame_positions"] == (vlm.cfg.data.frames - 1) * 32  # one per frame after the first
    assert r["frame_deltas"] == 32 * 32  # CLIP width -> LLM width, no bias
    assert r["llm"] == sum(p.numel() for p in vlm.llm.parameters())  # tied embedding counted once
    assert r["trainable"]["vision"] == 0
    assert r["trainable"]["total"] == r["projector"] + r["llm"] + r["voco_slots"] + r["frame_positions"] + \
        r["frame_deltas"]


def test_frame_positions_tell_a_clips_frames_apart_and_leave_images_alone():
    """Frame t >= 1 of a clip gets embedding t - 1 on every image token; frame 0, a lone image and
    a frame fed alone at its own index (`from_frame`, as streaming does) agree with the clip."""
    vlm = tiny_vlm()
    frames = vlm.cfg.data.frames
    assert vlm.frame_positions.shape == (frames - 1, 32)
    torch.testing.assert_close(vlm.frame_positions.detach(), sincos_frames(frames, 32, vlm.cfg.llm.frame_positions_rms))
    with torch.no_grad():
        vlm.frame_positions.normal_()
    clip = images(1, 3, frames=frames)
    ids, layout = assemble([7], [9], SPECIAL, frames=frames, image_tokens=V, voco_tokens=1)
    one, one_layout = assemble([7], [9], SPECIAL, frames=1, image_tokens=V, voco_tokens=1)
    with torch.no_grad():
        whole = vlm.embed(torch.tensor([ids]), pixels=clip, layouts=[layout])
        for t, frame in enumerate(layout.frames):
            with vlm.from_frame(t, vlm.encode_images(clip[:, t - 1]) if t else None):
                alone = vlm.embed(torch.tensor([one]), pixels=clip[:, t], layouts=[one_layout])
            lone = vlm.embed(torch.tensor([one]), pixels=clip[:, t], layouts=[one_layout])
            got = whole[0, frame.image.start : frame.image.stop]
            span = one_layout.frames[0].image
            torch.testing.assert_close(got, alone[0, span.start : span.stop], atol=1e-6, rtol=0)
            added = got - lone[0, span.start : span.stop]
            want = torch.zeros(32) if t == 0 else vlm.frame_positions[t - 1]
            torch.testing.assert_close(added, want.expand_as(added), atol=1e-5, rtol=0)
        assert vlm._first_frame == 0 and vlm._previous is None  # reset on leaving the block
        with pytest.raises(ValueError, match="frame positions"), vlm.from_frame(frames, vlm.encode_images(clip[:, 0])):
            vlm.embed(torch.tensor([one]), pixels=clip[:, 0], layouts=[one_layout])
        for t, previous in ((1, None), (0, vlm.encode_images(clip[:, 0]))):
            with pytest.raises(ValueError, match="previous frame"), vlm.from_frame(t, previous):
                pass
    # an image never reaches them: no gradient (an image stage freezes them: tests/test_training.py)
    tokens, img_layout = assemble([7, 8], [9], SPECIAL, image_tokens=V, voco_tokens=1)
    batch = pad_batch([tokens], SPECIAL.pad)
    vlm.train()
    vlm(batch, [img_layout], pixels=images(1, 4), labels=labels_from_layouts(batch, [img_layout])).loss.backward()
    assert vlm.frame_positions.grad is None and vlm.frame_deltas.weight.grad is None


@pytest.mark.parametrize("method", ["none", "uniform", "avgpool"])
def test_frame_deltas_mark_each_tokens_change_since_the_frame_before(method):
    """Zero at the start and drawn from no random numbers (a scene model initialises and trains as
    before). Learned, frame t's image tokens gain W (f_t - f_{t-1}) of the features the projector
    reads: all patches, a token drop's kept patches against the same patches, a pooling's tokens
    against the frame before's; frame 0 and a lone image nothing; a frame fed alone with the frame
    before's features (streaming) agrees with the clip."""
    torch.manual_seed(0)
    want = torch.rand(3)
    torch.manual_seed(0)
    FrameDeltas(32, 32)
    assert torch.equal(torch.rand(3), want)
    settings = {} if method == "none" else {"compress.method": method, "compress.tokens": 4}
    vlm, plain = tiny_vlm(**settings), tiny_vlm(**settings)  # the same seed: the same weights
    assert vlm.frame_deltas.weight.abs().max() == 0
    with torch.no_grad():
        vlm.frame_deltas.weight.normal_()
        feats = vlm.encode_images(images(1, 5, frames=3))[0]  # [T, V, Dv]
        n = vlm.image_slots
        ids, layout = assemble([7], [9], SPECIAL, frames=3, image_tokens=n, voco_tokens=1)
        one, one_layout = assemble([7], [9], SPECIAL, frames=1, image_tokens=n, voco_tokens=1)
        whole = vlm.embed(torch.tensor([ids]), features=feats[None])
        gained = whole - plain.embed(torch.tensor([ids]), features=feats[None])
        seen = feats if method == "none" else vlm.compressor(feats)  # uniform: the kept patches' features
        for t, frame in enumerate(layout.frames):
            change = seen[t] - seen[max(t - 1, 0)]
            got = gained[0, frame.image.start : frame.image.stop]
            torch.testing.assert_close(got, change @ vlm.frame_deltas.weight.T, atol=1e-5, rtol=0)
            with vlm.from_frame(t, feats[None, t - 1] if t else None):
                alone = vlm.embed(torch.tensor([one]), features=feats[None, t])
            span = one_layout.frames[0].image
            torch.testing.assert_close(alone[0, span.start : span.stop], whole[0, frame.image.start : frame.image.stop])
        lone = [m.embed(torch.tensor([one]), features=feats[None, 2]) for m in (vlm, plain)]
        assert torch.equal(*lone)


def test_frame_embeddings_start_at_an_ordered_sine_cosine_code_of_the_configured_rms():
    """`llm.frame_positions_rms`: one fixed code (no draw, so the scene model's training is untouched),
    relative to frame 0, which carries none: its distance from frame 0 grows with the frame index
    and every frame's code differs. 0 starts them at zero, as before the code existed."""
    code = sincos_frames(4, 256, 0.32)
    assert code.shape == (3, 256) and torch.equal(code, sincos_frames(4, 256, 0.32))
    assert abs(code.pow(2).mean().sqrt().item() - 0.32) < 1e-5
    assert torch.cdist(code, code).add(torch.eye(3)).min() > 0.1
    assert code[0].norm() < code[1].norm() < code[2].norm()  # farther from frame 0 the later the frame
    assert sincos_frames(4, 256, 0.0).abs().max() == 0
    zero, code = tiny_vlm(**{"llm.frame_positions_rms": 0.0}), tiny_vlm()  # the same seed
    assert zero.frame_positions.abs().max() == 0 and code.frame_positions.abs().max() > 0
    weights = dict(code.named_parameters())
    assert all(torch.equal(p, weights[n]) for n, p in zero.named_parameters() if n != "frame_positions")
    with pytest.raises(ValueError, match="frame_positions_rms"):
        tiny_vlm(**{"llm.frame_positions_rms": -0.1})


def test_distinct_voco_slots_tell_the_k_tokens_apart_in_every_path():
    """With `voco.distinct`, slot j of every frame gets embedding j, whether the layouts are
    given (a forward) or not (the cache's prefix, a reference built from the ids alone)."""
    from tiny import images

    vlm = VoCoVLM(tiny_cfg(**{"voco.distinct": True}), SPECIAL, 40).eval()
    assert vlm.voco_slots.shape == (V, 32)
    ids, layout = assemble([7, 8], [9], SPECIAL, frames=2, image_tokens=V, voco_tokens=3)
    batch = pad_batch([ids], SPECIAL.pad)
    with torch.no_grad():
        by_layout = vlm.embed(batch, pixels=images(1, 0, frames=2), layouts=[layout])
        without_layouts = vlm.embed(batch, pixels=images(1, 0, frames=2))
        plain = VoCoVLM(tiny_cfg(**{"voco.distinct": False}), SPECIAL, 40).eval()
        plain.load_state_dict({k: v for k, v in vlm.state_dict().items() if k != "voco_slots"})
        base = plain.embed(batch, pixels=images(1, 0, frames=2), layouts=[layout])
    torch.testing.assert_close(without_layouts, by_layout, atol=0, rtol=0)
    added = by_layout - base
    for frame in layout.frames:
        for j, position in enumerate(frame.voco.range()):
            torch.testing.assert_close(added[0, position], vlm.voco_slots[j])
    others = [p for p in range(layout.length) if p not in layout.voco_positions()]
    assert added[0, others].abs().max() == 0
    one_frame, _ = assemble([], [], SPECIAL, frames=1, image_tokens=V, voco_tokens=3, add_eos=False)
    ids1 = torch.tensor([one_frame])
    with torch.no_grad():
        running = vlm.embed(ids1, pixels=images(1, 0)) - plain.embed(ids1, pixels=images(1, 0))
    for j in range(3):
        torch.testing.assert_close(running[0, 1 + V + j], vlm.voco_slots[j])


def test_tokens_placed_at_some_patches_get_those_patches_positions():
    """PruMerge on the upper bound keeps K of the V patches: projected under `placed_at`,
    each kept feature is what the full projection gives at its patch."""
    vlm = tiny_vlm_with_positions(True)
    feats = torch.randn(2, V, 32)
    keep = torch.tensor([1, 5, 6])
    with torch.no_grad():
        full = vlm.projector(feats)
        with vlm.projector.placed_at(keep):
            part = vlm.projector(feats[:, keep])
        with pytest.raises(ValueError, match="patch index"), vlm.projector.placed_at(keep):
            vlm.projector(feats[:, :2])
        assert vlm.projector.patch_index is None  # the block is left as it was entered
    torch.testing.assert_close(part, full[:, keep])


@pytest.mark.parametrize("method", ["uniform", "random"])
def test_token_drops_keep_their_patches_positions(method):
    """A token drop on the upper bound keeps K of the V patches unchanged: each kept token is
    the upper bound's own projected token at that patch, per-patch position included."""
    upper = tiny_vlm_with_positions(True)
    drop = tiny_vlm(**{"llm.image_positions": True, "compress.method": method, "compress.tokens": 4})
    drop.load_backbone(upper.state_dict())
    assert drop.projector.positions is not None
    ids = torch.tensor([[SPECIAL.bos] + [SPECIAL.image] * 4] * 2)
    feats = torch.randn(2, 1, V, 32)
    seeded = getattr(drop.compressor, "generator", None)  # random: draw the same patches twice
    with torch.no_grad():
        seeded is not None and seeded.manual_seed(drop.compressor.seed)
        kept = drop.compressor.choose(feats[:, 0]).expand(2, -1)
        seeded is not None and seeded.manual_seed(drop.compressor.seed)
        got = drop.embed(ids, features=feats)[:, 1:]
        full = upper.projector(feats[:, 0])
    torch.testing.assert_close(got, torch.stack([full[i, kept[i]] for i in range(2)]))
    with pytest.raises(ValueError, match="patch index"):
        drop.projector(feats[:, 0, :4], torch.arange(3))


def test_clip_cells_see_a_new_design_that_the_weights_identity_misses():
    """Zero frame embeddings (a scene model saved before they existed, or `llm.frame_positions_rms=0`)
    weigh nothing in `model_id` but change `architecture`, which the clip-trained cells' keys also hold."""
    from vocolab.studies.cells import architecture, model_id

    zero = {"llm.frame_positions_rms": 0.0}
    a, b = tiny_vlm(seed=0, **zero), tiny_vlm(seed=1, **zero)
    assert architecture(a) == architecture(b) and model_id(a) != model_id(b)
    fewer = tiny_vlm(seed=0, **{"data.frames": 3}, **zero)
    assert model_id(fewer) == model_id(a) and architecture(fewer) != architecture(a)
