"""One batch, built fast: the texts of a batch are tokenized in one call, and a split whose
frozen CLIP features are attached never draws the pixels they replace. Both are speed-ups
only (the `small` preset's loader took a third of its GPU step), so the batch must not change."""

import numpy as np
import pytest
import torch

from vocolab.core.presets import preset
from vocolab.core.layout import assemble_turns
from vocolab.data.batching import make_batch
from vocolab.data.module import VoCoDataModule
from vocolab.data.tokenizer import build_tokenizer, special_ids

CFG = preset("nano", **{"data.train_scenes": 40, "data.heldout_scenes": 8, "data.val_scenes": 8})
TOK = build_tokenizer(CFG)
IDS = special_ids(TOK)
QUESTIONS = [["what color is the circle?", "how many squares are there?"], ["is there a red cross?", ""]]
ANSWERS = [["red", "two"], ["no", "yes"]]


def _one_text_at_a_time(questions, answers, frames):
    encode = lambda text: TOK(text, add_special_tokens=False)["input_ids"] if text else []  # noqa: E731
    return [assemble_turns([(encode(q), encode(a)) for q, a in zip(qs, as_)], IDS, frames=frames,
                           image_tokens=CFG.data.image_tokens, voco_tokens=1)[0] for qs, as_ in zip(questions, answers)]


def test_one_tokenizer_call_gives_the_ids_of_one_call_per_text():
    images = np.zeros((2, 64, 64, 3), np.uint8)
    batch = make_batch(TOK, IDS, QUESTIONS, ANSWERS, images, image_tokens=CFG.data.image_tokens, voco_tokens=1)
    for row, tokens in zip(batch.input_ids, _one_text_at_a_time(QUESTIONS, ANSWERS, frames=1)):
        assert row[: len(tokens)].tolist() == tokens
        assert (row[len(tokens):] == IDS.pad).all()


@pytest.mark.parametrize("frames", [1, 3])
def test_a_frame_count_lays_out_what_the_pixels_would(frames):
    shape = (2, 64, 64, 3) if frames == 1 else (2, frames, 64, 64, 3)
    kwargs = dict(image_tokens=CFG.data.image_tokens, voco_tokens=2)
    drawn = make_batch(TOK, IDS, QUESTIONS, ANSWERS, np.zeros(shape, np.uint8), **kwargs)
    counted = make_batch(TOK, IDS, QUESTIONS, ANSWERS, None, frames=frames, **kwargs)
    assert counted.pixels is None and drawn.pixels is not None
    assert torch.equal(counted.input_ids, drawn.input_ids) and torch.equal(counted.labels, drawn.labels)
    assert counted.layouts == drawn.layouts
    with pytest.raises(ValueError, match="not both"):
        make_batch(TOK, IDS, QUESTIONS, ANSWERS, np.zeros(shape, np.uint8), frames=frames, **kwargs)


class _NoPixels:
    """Stands in for a split's images: indexing it is the mistake under test."""

    ndim, shape = 4, (40, 64, 64, 3)

    def __getitem__(self, items):
        raise AssertionError("pixels were drawn for a batch that carries features")


def test_a_split_with_features_never_draws_its_pixels():
    data = VoCoDataModule(CFG, task="qa", turns=True, progress=False)
    data.batch_size = 4
    data.setup()
    train = data.split("train")
    expected = next(iter(data.train_dataloader()))
    train.features = torch.arange(40, dtype=torch.float32)[:, None, None].expand(40, CFG.data.image_tokens, 2)
    train.images = _NoPixels()
    batch = next(iter(data.train_dataloader()))
    assert batch.pixels is None and torch.equal(batch.input_ids, expected.input_ids)
    items = batch.features[:, 0, 0].long()
    assert torch.equal(batch.features, train.features[items]) and len(set(items.tolist())) == 4
