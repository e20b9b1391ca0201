"""`training.teacher_cache`: a frozen teacher's answer logits kept per training item give the losses
the teacher gives when it runs every step, and it runs once per item."""

import torch
from data_helpers import data_cache
import pytest
from tiny import tiny_cfg

from vocolab.core.layout import IGNORE_INDEX
from vocolab.data.module import VoCoDataModule
from vocolab.training.distill import DistillModule
from vocolab.training.teacher_cache import AnswerLogits

CFG = tiny_cfg(**{"train.batch_size": 4})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    with data_cache(tmp_path_factory):
        module = VoCoDataModule(CFG, train_n=8, heldout_n=4, turns=True, progress=False)
        module.setup()
        yield module


def test_only_multi_turn_training_batches_name_their_items(data):
    train, val = data.split("train"), data.split("val")
    assert data.collate(train, [(3, -1), (5, -1)]).items == (3, 5)
    assert data.collate(train, [(3, 0), (5, 1)]).items is None  # one question: the item alone is not the sequence
    assert data.collate(val, [(3, -1), (5, -1)]).items is None  # never mixed up with the training items


def test_the_teacher_runs_once_per_item_and_gives_the_same_scored_logits(data):
    torch.manual_seed(0)
    teacher = DistillModule(CFG).model.eval()
    calls = []

    def run(batch):
        calls.append(len(batch))
        with torch.no_grad():
            return teacher(batch.input_ids, batch.layouts, features=batch.features, pixels=batch.pixels,
                           mask="causal").logits

    kept = AnswerLogits()
    train = data.split("train")
    first = data.collate(train, [(0, -1), (1, -1), (2, -1)])
    got = kept.logits(first, run)
    scored = first.labels[:, 1:] != IGNORE_INDEX
    want = run(first)[:, :-1][scored]
    torch.testing.assert_close(got[:, :-1][scored], want, atol=1e-5, rtol=0)
    assert (got[:, :-1][~scored] == 0).all() and calls == [3, 3]
    again = data.collate(train, [(2, -1), (4, -1), (0, -1)])
    got = kept.logits(again, run)
    assert calls == [3, 3, 1] and kept.computed == 4 and len(kept) == 4  # only item 4 was new
    scored = again.labels[:, 1:] != IGNORE_INDEX
    torch.testing.assert_close(got[:, :-1][scored], run(again)[:, :-1][scored], atol=1e-5, rtol=0)
    unnamed = data.collate(train, [(0, 0), (1, 0)])
    kept.logits(unnamed, run)
    assert calls[-1] == 2 and len(kept) == 4  # no items: the teacher runs on the whole batch, nothing kept


def test_a_cached_teacher_gives_the_same_losses(data):
    batch = data.collate(data.split("train"), [(i, -1) for i in range(4)])
    torch.manual_seed(1)
    teacher = DistillModule(CFG).model.eval()
    losses = {}
    for cached in (False, True):
        module = DistillModule(CFG.override(**{"train.teacher_cache": cached}), objective="logits")
        module.model.load_state_dict(teacher.state_dict())
        module.set_teacher(teacher)
        losses[cached] = [module.distill_losses(batch) for _ in range(2)]
        assert module.answers.computed == (4 if cached else 0)  # the second step read them back
    for step in range(2):
        for name in ("ce", "kl", "loss"):
            torch.testing.assert_close(losses[True][step][name], losses[False][step][name], atol=1e-5, rtol=0)
