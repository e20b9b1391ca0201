"""`sdpa_frames` (`models.frame_attention`): SDPA over the `video` mask's blocks only must give what dense SDPA
gives, forward and backward, and must fall back to dense SDPA wherever the blocks do not describe the mask."""

import pytest
import torch
import torch.nn.functional as F
from tiny import SPECIAL, V, images, tiny_vlm

from vocolab.core.layout import assemble, pad_batch
from vocolab.core.masks import build_mask
from vocolab.models.frame_attention import frame_block_attention, frame_blocks, shared_frames
from vocolab.models.inputs import prepare


def clip_batch(frames=3, k=2):
    """Three clips of the same frames with questions of different lengths: right padding in two of them."""
    samples = [assemble([10, 11], [12], SPECIAL, frames=frames, image_tokens=V, voco_tokens=k),
               assemble(list(range(10, 19)), [13, 14], SPECIAL, frames=frames, image_tokens=V, voco_tokens=k),
               assemble([15], [16], SPECIAL, frames=frames, image_tokens=V, voco_tokens=k)]
    return pad_batch([s for s, _ in samples], SPECIAL.pad), [layout for _, layout in samples]


def forward_and_grads(vlm, ids, layouts, pixels, mask="video"):
    vlm.zero_grad()
    out = vlm(ids, layouts, pixels=pixels, mask=mask)
    real = torch.stack([torch.arange(ids.shape[1]) < layout.length for layout in layouts])
    (out.logits[real] ** 2).mean().backward()  # every real position's logits reach the loss
    return out.logits.detach(), {n: p.grad.clone() for n, p in vlm.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("gqa", [False, True])
def test_matches_dense_sdpa_forward_and_backward_under_the_video_mask(gqa):
    ids, layouts = clip_batch()
    clips = images(3, seed=1, frames=3)
    dense, blocks = tiny_vlm("sdpa", gqa=gqa), tiny_vlm("sdpa_frames", gqa=gqa)
    blocks.load_state_dict(dense.state_dict())
    assert prepare(blocks, "test", ids, layouts, pixels=clips, mask="video").frame_blocks is not None
    ref_logits, ref_grads = forward_and_grads(dense, ids, layouts, clips)
    logits, grads = forward_and_grads(blocks, ids, layouts, clips)
    real = torch.stack([torch.arange(ids.shape[1]) < layout.length for layout in layouts])
    torch.testing.assert_close(logits[real], ref_logits[real], atol=1e-5, rtol=0)
    assert ref_grads.keys() == grads.keys() and len(grads) > 10
    for name, grad in ref_grads.items():
        torch.testing.assert_close(grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_the_attention_function_alone_matches_sdpa_on_the_mask():
    ids, layouts = clip_batch(frames=2, k=1)
    mask = build_mask(layouts, "video")
    blocks = frame_blocks(mask, layouts)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 2, ids.shape[1], 8, generator=g) for _ in range(3))
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)
    out, weights = frame_block_attention(torch.nn.Module(), q, k, v, mask, frame_blocks=blocks)
    assert weights is None and out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)


def test_blocks_are_found_only_where_they_describe_the_mask():
    ids, layouts = clip_batch()
    assert shared_frames(layouts) == (3, V + 2)
    blocks = frame_blocks(build_mask(layouts, "video"), layouts)
    assert (blocks.frames, blocks.span, blocks.voco, blocks.prefix) == (3, V + 2, 2, 1 + 3 * (V + 2))
    assert blocks.frame_mask.shape == (3 * 3, 1, V + 2, V + 3) and blocks.text_keys.shape == (3 * 2 + ids.shape[1]
                                                                                            - blocks.prefix,)
    for mode in ("causal", "voco"):  # a frame's tokens see earlier frames (causal) or text sees the image
        assert frame_blocks(build_mask(layouts, mode), layouts) is None
    other = assemble([10], [12], SPECIAL, frames=2, image_tokens=V, voco_tokens=2)[1]
    no_voco = assemble([10], [12], SPECIAL, frames=3, image_tokens=V, voco_tokens=0)[1]
    text_only = assemble([10], [12], SPECIAL, frames=0)[1]
    for odd in (other, no_voco, text_only):
        assert shared_frames(layouts[:2] + [odd]) is None


def test_falls_back_to_dense_sdpa_where_the_blocks_do_not_apply():
    dense, blocks = tiny_vlm("sdpa"), tiny_vlm("sdpa_frames")
    blocks.load_state_dict(dense.state_dict())
    ids, layouts = clip_batch()
    mixed = assemble([10, 11], [12], SPECIAL, frames=2, image_tokens=V, voco_tokens=2)
    mixed_ids = pad_batch([ids[0, :layouts[0].length].tolist(), mixed[0]], SPECIAL.pad)
    mixed_layouts, mixed_pix = [layouts[0], mixed[1]], [images(1, seed=2, frames=3)[0], images(1, seed=3, frames=2)[0]]
    with torch.no_grad():
        for args, mode in (((ids, layouts, images(3, seed=1, frames=3)), "voco"),
                           ((ids, layouts, images(3, seed=1, frames=3)), "causal"),
                           ((mixed_ids, mixed_layouts, mixed_pix), "video")):
            assert prepare(blocks, "test", args[0], args[1], pixels=args[2], mask=mode).frame_blocks is None
            torch.testing.assert_close(blocks(*args[:2], pixels=args[2], mask=mode).logits,
                                       dense(*args[:2], pixels=args[2], mask=mode).logits, atol=1e-5, rtol=0)
