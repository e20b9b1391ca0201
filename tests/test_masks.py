"""Masks against hand-written matrices (1 = may attend), plus the backend converters."""

import pytest
import torch

from vocolab.core.layout import SpecialIds, assemble, build_layout, pad_batch, position_ids
from vocolab.core.masks import build_mask, for_backend, sample_mask, to_additive, to_block_mask


def M(rows: str) -> torch.Tensor:
    return torch.tensor([[c == "1" for c in r.split()[0]] for r in rows.strip().splitlines()])


# [BOS] [I I] [V] [q a E] : length 7
IMAGE = build_layout(1, 2, frames=1, image_tokens=2, voco_tokens=1)

CAUSAL = M("""
1000000
1100000
1110000
1111000
1111100
1111110
1111111
""")

VOCO = M("""
1000000
1100000
1110000
1111000
0001100
0001110
0001111
""")

# [BOS] [I I][V] [I I][V] [q a] : length 9, two frames
CLIP = build_layout(1, 1, frames=2, image_tokens=2, voco_tokens=1)
VIDEO = M("""
100000000
110000000
111000000
111100000
100010000
100011000
100011100
000100110
000100111
""")


def test_layout_offsets_from_start():
    assert IMAGE.frames[0].image.start == 1 and IMAGE.frames[0].voco.start == 3
    assert IMAGE.text.start == 4 and IMAGE.answer.start == 5 and IMAGE.length == 7
    assert CLIP.voco_positions() == [3, 6] and CLIP.image_positions() == [1, 2, 4, 5]


def test_causal_mode():
    assert torch.equal(sample_mask(IMAGE, "causal"), CAUSAL)


def test_voco_mode_hides_bos_and_image_from_text():
    assert torch.equal(sample_mask(IMAGE, "voco"), VOCO)


def test_video_mode_isolates_frames():
    assert torch.equal(sample_mask(CLIP, "video"), VIDEO)


def test_video_with_one_frame_equals_voco():
    assert torch.equal(sample_mask(IMAGE, "video"), sample_mask(IMAGE, "voco"))


def test_no_voco_tokens_means_plain_causal():
    lay = build_layout(2, 2, frames=1, image_tokens=3, voco_tokens=0)
    for mode in ("voco", "video"):
        assert torch.equal(sample_mask(lay, mode), sample_mask(lay, "causal"))


def test_padding_and_mixed_batch():
    text_only = build_layout(2, 1, frames=0)  # [BOS] q q a : length 4
    mask = build_mask([IMAGE, text_only], "voco")
    assert mask.shape == (2, 1, 7, 7)
    assert torch.equal(mask[0, 0], VOCO)
    expected = M("""
1000000
1100000
1110000
1111000
0000100
0000010
0000001
""")
    assert torch.equal(mask[1, 0], expected)
    assert mask.any(-1).all(), "a fully masked row would give NaN under SDPA"


def test_sdpa_has_no_nan_on_padding_rows():
    text_only = build_layout(2, 1, frames=0)
    mask = build_mask([IMAGE, text_only], "voco")
    q = torch.randn(2, 1, 7, 4)
    out = torch.nn.functional.scaled_dot_product_attention(q, q, q, attn_mask=mask)
    assert torch.isfinite(out).all()


def test_additive_mask_and_backends():
    mask = build_mask([IMAGE], "voco")
    add = to_additive(mask)
    assert add.dtype == torch.float32
    assert (add[mask] == 0).all() and (add[~mask] == torch.finfo(torch.float32).min).all()
    assert for_backend(mask, "sdpa") is mask
    assert for_backend(mask, "eager", torch.bfloat16).dtype == torch.bfloat16
    for bad in ("flash_attention_2", "sdpa_paged", "nonsense"):
        with pytest.raises(ValueError, match="ignore"):
            for_backend(mask, bad)


def test_block_mask_matches_bool_mask():
    mask = build_mask([IMAGE, CLIP], "video")
    block = to_block_mask(mask)
    b, q, k = torch.meshgrid(torch.arange(2), torch.arange(9), torch.arange(9), indexing="ij")
    assert torch.equal(block.mask_mod(b, torch.zeros_like(b), q, k), mask[:, 0])
    assert block.shape[-2:] == (9, 9)


def test_assemble_matches_layout():
    ids = SpecialIds(bos=1, eos=2, pad=0, image=3, voco=4)
    tokens, lay = assemble([10, 11], [12], ids, frames=2, image_tokens=2, voco_tokens=1)
    assert tokens == [1, 3, 3, 4, 3, 3, 4, 10, 11, 12, 2]
    assert lay.answer.start == 9 and lay.answer.length == 2 and lay.question.length == 2
    batch = pad_batch([tokens, [1, 10, 2]], pad_id=0)
    assert batch.shape == (2, 11) and batch[1, 3:].eq(0).all()
    assert torch.equal(position_ids(2, 11)[1], torch.arange(11))
    with pytest.raises(ValueError):
        pad_batch([tokens], pad_id=0, length=5)


def test_bad_mode_and_overflow():
    with pytest.raises(ValueError, match="mode"):
        sample_mask(IMAGE, "diagonal")
    with pytest.raises(ValueError, match="fit"):
        sample_mask(IMAGE, "voco", length=3)


def test_multi_turn_layout_scores_every_answer():
    from vocolab.core.layout import assemble_turns, labels_from_layouts

    ids = SpecialIds(bos=1, eos=2, pad=0, image=3, voco=4)
    tokens, lay = assemble_turns([([10, 11], [12]), ([13], [14])], ids, image_tokens=2, voco_tokens=1)
    #          BOS IMG IMG VOCO q  q  a  E  q  a  E
    assert tokens == [1, 3, 3, 4, 10, 11, 12, 2, 13, 14, 2]
    assert lay.turns == (lay.turns[0],) and (lay.turns[0].start, lay.turns[0].length) == (6, 2)
    assert (lay.answer.start, lay.question.start, lay.question.length) == (9, 8, 1)
    labels = labels_from_layouts(torch.tensor([tokens]), [lay])[0]
    assert labels.tolist() == [-100] * 6 + [12, 2, -100, 14, 2]
    single, single_lay = assemble([10, 11], [12], ids, image_tokens=2, voco_tokens=1)
    first, first_lay = assemble_turns([([10, 11], [12])], ids, image_tokens=2, voco_tokens=1)
    assert first == single and first_lay == single_lay  # one turn is the single-question layout
