"""The VoCo cache is exact: everything read through it equals the full masked forward.

* teacher forcing over a caption-length text, K = 1, 2, 4, two text lengths in one batch;
* greedy decoding of 20+ tokens equals the no-cache reference decoder (token for
  token, step logits within 1e-5), the multi-token case the official code got wrong;
* one cache answers many questions and is never modified;
* streaming video: per-frame caches == one `video`-mask forward over the whole clip;
* safetensors round trip, corrupt files refused, byte accounting.
"""

import pytest
import torch
from tiny import SPECIAL, VOCAB, V, images, random_text, tiny_cfg, tiny_vlm

from vocolab.core.layout import assemble, pad_batch
from vocolab.inference.answering import answer, answer_texts, text_logits, text_mask
from vocolab.inference.cache import VoCoCache
from vocolab.inference.compression import compress, compress_frame, compress_video
from vocolab.inference.generate import greedy_generate
from vocolab.models.vlm import VoCoVLM


def full_text_logits(vlm, texts, pixels, mode, k, frames=1):
    """Logits at each text position from one full masked forward (right-padded batch)."""
    samples = [assemble(t, [], SPECIAL, frames=frames, image_tokens=V, voco_tokens=k, add_eos=False)
               for t in texts]
    ids = pad_batch([s for s, _ in samples], SPECIAL.pad)
    layouts = [l for _, l in samples]
    out = vlm(ids, layouts, pixels=pixels, mask=mode, use_cache=True)
    return [out.logits[i, l.text.start:l.text.stop] for i, l in enumerate(layouts)], out, layouts


@pytest.mark.parametrize("backend, k, distinct", [("sdpa", 1, False), ("sdpa", 2, False), ("sdpa", 4, False),
                                                   ("eager", 1, False), ("eager", 2, False), ("eager", 4, False),
                                                   ("sdpa", 4, True)])
def test_teacher_forcing_through_the_cache_equals_the_full_voco_forward(backend, k, distinct):
    vlm = tiny_vlm(backend, layers=3, **{"voco.distinct": distinct})
    texts = [random_text(31, seed=1), random_text(22, seed=2)]  # caption-length, two lengths
    pix = images(2, seed=3)
    with torch.no_grad():
        full, _, _ = full_text_logits(vlm, texts, pix, "voco", k)
        causal, _, _ = full_text_logits(vlm, texts, pix, "causal", k)
        cache = compress(vlm, pix, k)
        cached = text_logits(vlm, cache, texts)
    assert cache.tokens == k and cache.next_position == 1 + V + k
    assert cache.positions.tolist() == list(range(1 + V, 1 + V + k))
    for got, want, control in zip(cached, full, causal):
        assert got.shape == (len(want), VOCAB)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
        assert (got - control).abs().max() > 1e-3  # the causal model reads the image directly


@pytest.mark.parametrize("k", [1, 4])
def test_greedy_decoding_through_the_cache_matches_the_full_masked_forward(k):
    vlm = tiny_vlm("sdpa", layers=2, seed=4, untie=True)  # a seed whose greedy paths wander
    questions = [random_text(5, seed=4), random_text(1, seed=5), random_text(9, seed=6)]
    pix = images(3, seed=7)
    cache = compress(vlm, pix, k)
    got, got_logits = answer(vlm, cache, questions, 24, return_logits=True)
    want, want_logits = greedy_generate(vlm, SPECIAL, questions, pix, "voco", 24, voco_tokens=k,
                                        return_logits=True)
    assert got == want
    assert max(len(t) for t in got) >= 20 and min(len(set(t)) for t in got) >= 4  # long, not degenerate
    for a, b, tokens in zip(got_logits, want_logits, got):
        assert a.shape == b.shape and a.shape[0] in (len(tokens), len(tokens) + 1)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_structural_tokens_are_never_generated():
    """A model that prefers the image token (as the untrained-under-the-mask lower bound
    may) still decodes text on both paths: the next best token, never BOS/pad/image/VoCo."""
    vlm = tiny_vlm("sdpa", untie=True)
    structural = [SPECIAL.bos, SPECIAL.pad, SPECIAL.image, SPECIAL.voco]
    with torch.no_grad():
        bias = torch.zeros(vlm.vocab_size)
        bias[structural] = 1e4
        vlm.llm.lm_head.bias = torch.nn.Parameter(bias)
    questions = [random_text(4, seed=11), random_text(3, seed=12)]
    pix = images(2, seed=13)
    got = answer(vlm, compress(vlm, pix, 1), questions, 5)
    assert got == greedy_generate(vlm, SPECIAL, questions, pix, "voco", 5, voco_tokens=1)
    assert all(len(t) > 0 and not set(t) & set(structural) for t in got)


def test_answer_stops_at_eos_and_leaves_it_out():
    vlm = tiny_vlm("sdpa", untie=True)
    questions = [random_text(4, seed=8), random_text(2, seed=9)]
    cache = compress(vlm, images(2, seed=10), 2)
    free = answer(vlm, cache, questions, 6)
    eos = free[0][2]  # make sample 0's third token its EOS
    tokens, logits = answer(vlm, cache, questions, 6, eos_id=eos, return_logits=True)
    assert tokens[0] == free[0][:free[0].index(eos)] and eos not in tokens[0]
    assert logits[0].shape[0] == len(tokens[0]) + 1 and logits[0][-1].argmax() == eos
    assert tokens == greedy_generate(vlm, SPECIAL, questions, images(2, seed=10), "voco", 6,
                                     voco_tokens=2, eos_id=eos)
    assert answer(vlm, cache, questions, 0) == [[], []]


def test_one_cache_answers_many_questions_and_is_never_modified():
    vlm = tiny_vlm("sdpa", untie=True)
    cache = compress(vlm, images(1, seed=11), 2)
    before = [t.clone() for t in (*cache.keys, *cache.values)]
    questions = [random_text(3, seed=12), random_text(7, seed=13), random_text(1, seed=14)]
    first = answer(vlm, cache, questions, 8)
    second = answer(vlm, cache, questions, 8)
    alone = [answer(vlm, cache, [q], 8)[0] for q in questions]  # no padding at all
    assert first == second == alone
    for t, b in zip((*cache.keys, *cache.values), before):
        assert torch.equal(t, b)
    assert cache.batch == 1 and cache.tokens == 2
    with pytest.raises(ValueError, match="questions"):
        answer(vlm, compress(vlm, images(2, seed=11), 2), questions, 2)


def test_text_mask_hides_padding_and_never_leaves_a_row_empty():
    real_past = torch.tensor([[False, True], [True, True]])
    real_new = torch.tensor([[False, True, True], [True, True, True]])
    mask = text_mask(2, real_past, real_new)[:, 0]
    assert mask.shape == (2, 3, 2 + 2 + 3)
    assert mask.any(dim=-1).all()  # no fully masked row
    assert mask[0, 0].tolist() == [False, False, False, False, True, False, False]  # pad row: itself
    assert mask[0, 2].tolist() == [True, True, False, True, False, True, True]
    assert mask[1, 0].tolist() == [True, True, True, True, True, False, False]


@pytest.mark.parametrize("backend, distinct", [("sdpa", False), ("eager", False), ("sdpa", True)])
def test_streaming_video_cache_equals_the_full_video_forward(backend, distinct):
    k, frames = 2, 3
    vlm = tiny_vlm(backend, layers=3, **{"voco.distinct": distinct})
    with torch.no_grad():  # frames told apart and changes marked, as a trained clip model's are (zero at the start)
        vlm.frame_positions.normal_(generator=torch.Generator().manual_seed(14))
        vlm.frame_deltas.weight.normal_(generator=torch.Generator().manual_seed(13))
    clips = images(2, seed=15, frames=frames)
    texts = [random_text(12, seed=16), random_text(21, seed=17)]
    with torch.no_grad():
        full, out, layouts = full_text_logits(vlm, texts, clips, "video", k, frames=frames)
    cache = compress_video(vlm, clips, k)
    vpos = layouts[0].voco_positions()
    assert cache.frames == frames and cache.tokens == frames * k
    assert cache.positions.tolist() == vpos and cache.next_position == layouts[0].text.start
    for i, layer in enumerate(out.past_key_values.layers):
        torch.testing.assert_close(cache.keys[i], layer.keys[:, :, vpos], atol=1e-5, rtol=0)
        torch.testing.assert_close(cache.values[i], layer.values[:, :, vpos], atol=1e-5, rtol=0)
    for got, want in zip(text_logits(vlm, cache, texts), full):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    # streaming by hand, frame by frame, gives the same cache
    streamed = None
    for t in range(frames):
        streamed = compress_frame(vlm, streamed, clips[:, t], t, k)
    assert all(torch.equal(a, b) for a, b in zip(streamed.keys, cache.keys))
    assert torch.equal(streamed.last_frame, vlm.encode_images(clips[:, -1]))  # the next frame's change: from it
    with pytest.raises(ValueError, match="order"):
        compress_frame(vlm, streamed, clips[:, 0], 1, k)
    forgetful = VoCoCache(streamed.keys, streamed.values, streamed.positions, streamed.next_position, k, frames)
    with pytest.raises(ValueError, match="last frame"):
        compress_frame(vlm, forgetful, clips[:, 0], frames, k)


def test_video_greedy_decoding_through_the_cache_matches_the_full_video_forward():
    vlm = tiny_vlm("sdpa", untie=True)
    clips = images(2, seed=18, frames=2)
    questions = [random_text(3, seed=19), random_text(6, seed=20)]
    got = answer(vlm, compress_video(vlm, clips, 1), questions, 10)
    assert got == greedy_generate(vlm, SPECIAL, questions, clips, "video", 10, voco_tokens=1)


def test_cache_bytes_and_safetensors_round_trip(tmp_path):
    vlm = tiny_vlm("sdpa", layers=3)
    cache = compress_video(vlm, images(2, seed=21, frames=2), 2)
    n = cache.tokens
    m = vlm.cfg.llm
    head_dim = m.hidden_size // m.heads
    assert n == 4 and cache.nbytes == 2 * m.layers * 2 * m.kv_heads * head_dim * 4 * n  # B=2, fp32
    assert compress(vlm, images(1, seed=21), 1).nbytes == m.layers * 2 * m.kv_heads * head_dim * 4
    path = cache.save(tmp_path / "sub" / "clip.safetensors")
    back = VoCoCache.load(path)
    assert (back.k, back.frames, back.next_position, back.nbytes) == (cache.k, cache.frames,
                                                                      cache.next_position, cache.nbytes)
    assert torch.equal(back.positions, cache.positions)
    for a, b in zip((*back.keys, *back.values, back.last_frame), (*cache.keys, *cache.values, cache.last_frame)):
        assert torch.equal(a, b)
    # a stream saved mid-clip goes on from the file as from the cache in memory
    clip3 = images(2, seed=25, frames=3)
    half = compress_video(vlm, clip3[:, :2], 2)
    resumed = compress_frame(vlm, VoCoCache.load(half.save(tmp_path / "half.safetensors")), clip3[:, 2])
    assert all(torch.equal(a, b) for a, b in zip(resumed.keys, compress_video(vlm, clip3, 2).keys))
    assert torch.equal(cache.repeat(2).last_frame[2], cache.last_frame[1])
    assert torch.equal(cache.select([1]).last_frame[0], cache.last_frame[1])
    questions = [random_text(4, seed=22), random_text(2, seed=23)]
    assert answer(vlm, back, questions, 4) == answer(vlm, cache, questions, 4)

    raw = path.read_bytes()
    flipped = bytearray(raw)
    flipped[-5] ^= 0xFF  # one byte of tensor data
    bad = {"flipped": bytes(flipped), "truncated": raw[:-40], "garbage": b"not a safetensors file"}
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError):
            VoCoCache.load(tmp_path / name)
    with pytest.raises(ValueError, match="does not exist"):
        VoCoCache.load(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file
    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a VoCo cache"):
        VoCoCache.load(tmp_path / "other.safetensors")


def test_cache_helpers_and_validation():
    vlm = tiny_vlm("sdpa")
    cache = compress(vlm, images(3, seed=24), 2)
    one = cache.select([1])
    assert one.batch == 1 and torch.equal(one.keys[0][0], cache.keys[0][1])
    assert cache.select(1).repeat(4).batch == 4
    with pytest.raises(ValueError, match="k >= 1"):
        compress(vlm, images(1, seed=24), 0)
    with pytest.raises(ValueError, match="after"):
        cache.append(cache)  # same positions again
    with pytest.raises(ValueError, match="token"):
        answer(vlm, cache, [[10], [], [11]], 2)
    with pytest.raises(ValueError):
        VoCoCache(cache.keys, cache.values, torch.tensor([2, 1]), 20, k=2)


def test_answer_texts_with_the_real_tokenizer():
    from vocolab.data.tokenizer import build_tokenizer, special_ids

    cfg = tiny_cfg()
    tok = build_tokenizer(cfg)
    torch.manual_seed(0)
    vlm = VoCoVLM(cfg, special_ids(tok), len(tok)).eval()
    cache = compress(vlm, images(1, seed=25))
    out = answer_texts(vlm, tok, cache, ["what color is the circle?", "how many objects?"], max_new_tokens=3)
    assert len(out) == 2 and all(isinstance(s, str) for s in out)
