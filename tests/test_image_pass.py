"""`training.image_pass`: the two-pass forward (image tokens without autograd) gives the one-pass
forward's values exactly, and only the gradient changes: nothing reaches the weights that act on
the image tokens alone (projector, frame embeddings, frame deltas)."""

import numpy as np
import pytest
import torch
from tiny import batch, tiny_cfg, tiny_vlm

from vocolab.core.layout import labels_from_layouts
from vocolab.data.batching import Batch, make_batch
from vocolab.data.module import VoCoDataModule
from vocolab.models.inputs import gather
from vocolab.training.distill import DistillModule
from vocolab.training.image_pass import image_prefix, split_forward


def tiny_batch(frames: int, k: int, specs=((5, 2), (3, 4), (7, 1))) -> Batch:
    ids, layouts, pix = batch([(q, a, frames) for q, a in specs], voco=k)
    pixels = torch.stack(pix) if all(p is not None for p in pix) else pix
    return Batch(ids, layouts, pixels, labels_from_layouts(ids, layouts))


@pytest.mark.parametrize("backend", ["sdpa", "eager"])
@pytest.mark.parametrize("mask,frames,k", [("video", 3, 2), ("voco", 1, 1), ("voco", 1, 3)])
def test_two_passes_give_the_one_pass_logits_and_loss(backend, mask, frames, k):
    vlm = tiny_vlm(backend)
    b = tiny_batch(frames, k)
    with torch.no_grad():
        one = vlm(b.input_ids, b.layouts, pixels=b.pixels, mask=mask, labels=b.labels)
        two, index = split_forward(vlm, b, mask, b.labels)
    image = sum(f.image.length for f in b.layouts[0].frames)
    assert index.shape == (3, b.input_ids.shape[1] - 1 - image)
    want = gather(one.logits, index)
    for s, layout in enumerate(b.layouts):
        real = index[s] < layout.length
        assert real.sum() == layout.length - 1 - image  # every VoCo and text position, BOS and image left out
        torch.testing.assert_close(two.logits[s][real], want[s][real], atol=1e-5, rtol=0)
    torch.testing.assert_close(two.loss, one.loss, atol=1e-5, rtol=0)


def test_the_prefix_is_bos_and_the_image_tokens_in_order():
    b = tiny_batch(3, 2)
    order = image_prefix(b)
    layout = b.layouts[0]
    image = [i for f in layout.frames for i in range(f.image.start, f.image.stop)]
    assert order[0, : 1 + len(image)].tolist() == [0, *image]
    rest = order[0, 1 + len(image):].tolist()
    assert rest == sorted(rest) and rest[0] == layout.frames[0].voco.start


def test_no_gradient_reaches_what_acts_on_the_image_tokens_only():
    grads = {}
    for split in (False, True):
        vlm = tiny_vlm("sdpa").train()
        b = tiny_batch(3, 2)
        out = split_forward(vlm, b, "video", b.labels)[0] if split else vlm(
            b.input_ids, b.layouts, pixels=b.pixels, mask="video", labels=b.labels)
        out.loss.backward()
        grads[split] = {n: p.grad for n, p in vlm.named_parameters() if not n.startswith("vision.")}
    image_only = [n for n in grads[True] if n.startswith(("projector.", "frame_positions", "frame_deltas."))]
    assert image_only and all(grads[True][n] is None for n in image_only)
    assert all(grads[False][n] is not None and grads[False][n].abs().sum() > 0 for n in image_only)
    # the LLM learns, from another gradient: the first layer's keys and values of the image tokens are
    # what the VoCo tokens of the second (last that matters) read, and they no longer pass theirs back
    v = "llm.model.layers.0.self_attn.v_proj.weight"
    assert grads[True][v].abs().sum() > 0 and not torch.allclose(grads[True][v], grads[False][v], atol=1e-3)
    assert grads[True]["voco_slots"].abs().sum() > 0


def test_batches_without_one_prefix_take_the_ordinary_forward():
    vlm = tiny_vlm("sdpa")
    ids, layouts, pix = batch([(5, 2, 1), (3, 4, 0)], voco=1)  # an image sample and a text-only one
    mixed = Batch(ids, layouts, pix, labels_from_layouts(ids, layouts))
    assert image_prefix(mixed) is None
    with torch.no_grad():
        out, index = split_forward(vlm, mixed, "voco", mixed.labels)
        want = vlm(ids, layouts, pixels=pix, mask="voco", labels=mixed.labels)
    assert index is None and torch.equal(out.logits, want.logits)
    with pytest.raises(ValueError, match="image tokens see later tokens"):
        split_forward(vlm, tiny_batch(1, 1), "causal")


def test_a_distilled_video_student_scores_the_same_losses_either_way():
    """`train.image_grad = False` changes the gradient, never the losses the step logs."""
    cfg = tiny_cfg(**{"train.batch_size": 2})
    data = VoCoDataModule(cfg, progress=False)  # tokenizer only, no data loaded
    clips = np.random.default_rng(0).integers(0, 256, (2, 3, 16, 16, 3), dtype=np.uint8)
    clip_batch = make_batch(data.tokenizer, data.ids, ["what color is the circle?"] * 2, ["red", "blue"], clips,
                            image_tokens=16, voco_tokens=2)
    torch.manual_seed(1)
    teacher = DistillModule(cfg, mask="video").model.eval()
    losses = {}
    for grad in (True, False):
        module = DistillModule(cfg.override(**{"train.image_grad": grad}), objective="logits", mask="video")
        module.model.load_state_dict(teacher.state_dict())
        module.set_teacher(teacher).eval()
        losses[grad] = module.distill_losses(clip_batch)
    assert losses[True]["kl"] > 0
    for name in ("ce", "kl", "loss"):
        torch.testing.assert_close(losses[False][name], losses[True][name], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="image_grad = False"):
        DistillModule(cfg.override(**{"train.image_grad": False}), objective="logits+attention", mask="video")
