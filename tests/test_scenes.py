"""Scenes: sampling, rendering, captions, questions, and the blind-answerer bound."""

import time
from collections import Counter

import numpy as np
import pytest
from data_helpers import RENDER_CONFIGS, rngs

from vocolab.core.config import DataConfig
from vocolab.data.scenes import (
    BACKGROUND,
    FAMILIES,
    NOISE,
    Obj,
    Scene,
    caption,
    render_scene,
    sample_scene,
    scene_questions,
    shape_mask,
)
from vocolab.data.storage import iter_rows
from vocolab.data.vocab import NUMBER_WORDS, PALETTE, SHAPES_DRAWABLE, plural, words
from vocolab.evaluation.baselines import BlindAnswerer, accuracy, as_qas


def test_sample_scene_respects_config(nano):
    for rng in rngs(200):
        scene = sample_scene(rng, nano)
        assert nano.min_objects <= len(scene.objects) <= nano.max_objects
        cells = [(o.row, o.col) for o in scene.objects]
        assert len(set(cells)) == len(cells)
        assert cells == sorted(cells)  # row-major
        for o in scene.objects:
            assert o.shape in nano.shapes and o.color in nano.colors and o.size in nano.sizes
            assert 0 <= o.row < nano.grid and 0 <= o.col < nano.grid


def test_sample_scene_is_deterministic(nano):
    a = sample_scene(np.random.default_rng(3), nano)
    b = sample_scene(np.random.default_rng(3), nano)
    assert a == b and Scene.from_json(a.to_json()) == a


@pytest.mark.parametrize("cfg", RENDER_CONFIGS, ids=lambda c: f"{c.image_size}px-grid{c.grid}")
def test_render_every_geometry(cfg):
    scene = sample_scene(np.random.default_rng(0), cfg)
    img = render_scene(scene, cfg)
    assert img.shape == (cfg.image_size, cfg.image_size, 3) and img.dtype == np.uint8
    cell = cfg.image_size / cfg.grid
    for o in scene.objects:  # the centre pixel of every object but the ring carries its colour
        y, x = int((o.row + 0.5) * cell), int((o.col + 0.5) * cell)
        if o.shape != "ring":
            assert tuple(img[y, x]) == PALETTE[o.color], o
    occupied = {(o.row, o.col) for o in scene.objects}
    for r in range(cfg.grid):
        for c in range(cfg.grid):
            if (r, c) not in occupied:  # empty cells stay plain background
                y0, x0 = int(np.ceil(r * cell)), int(np.ceil(c * cell))
                patch = img[y0: int((r + 1) * cell), x0: int((c + 1) * cell)]
                assert (patch == BACKGROUND).all()


def test_every_shape_is_drawable_and_distinct():
    masks = {s: shape_mask(s, 12.0) for s in SHAPES_DRAWABLE}
    for s, m in masks.items():
        assert 0.2 < m.mean() < 0.9, s
    names = list(masks)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert (masks[a] != masks[b]).mean() > 0.05, (a, b)


def test_sizes_are_clearly_different(nano):
    cell = nano.image_size / nano.grid
    for shape in nano.shapes:
        small = shape_mask(shape, round(0.28 * cell, 3)).sum()
        large = shape_mask(shape, round(0.46 * cell, 3)).sum()
        assert large > 2 * small, shape
    img_s = render_scene(Scene((Obj("circle", "red", "small", 1, 1),)), nano)
    img_l = render_scene(Scene((Obj("circle", "red", "large", 1, 1),)), nano)
    assert (img_l != BACKGROUND).any(-1).sum() > 2 * (img_s != BACKGROUND).any(-1).sum()


def test_colours_are_distinct():
    cols = np.array(list(PALETTE.values()), dtype=float)
    dist = np.linalg.norm(cols[:, None] - cols[None], axis=-1) + np.eye(len(cols)) * 1e9
    assert dist.min() > 60
    assert np.linalg.norm(cols - np.array(BACKGROUND), axis=-1).min() > 100


def test_noise_is_slight_and_seeded(nano):
    scene = sample_scene(np.random.default_rng(0), nano)
    clean = render_scene(scene, nano).astype(int)
    noisy = render_scene(scene, nano, np.random.default_rng(1)).astype(int)
    again = render_scene(scene, nano, np.random.default_rng(1)).astype(int)
    assert (noisy == again).all() and (noisy != clean).any()
    assert np.abs(noisy - clean).max() <= NOISE


def test_render_is_fast(nano):
    scenes = [sample_scene(r, nano) for r in rngs(1000)]
    start = time.perf_counter()
    for s, r in zip(scenes, rngs(1000)):
        render_scene(s, nano, r)
    elapsed = time.perf_counter() - start
    print(f"\nrender: 1000 nano scenes in {elapsed:.2f} s")
    assert elapsed < 3.0


def test_render_rejects_wrong_grid(nano):
    with pytest.raises(ValueError, match="grid"):
        render_scene(Scene((), grid=6), nano)
    with pytest.raises(ValueError, match="shapes"):
        sample_scene(np.random.default_rng(0), DataConfig(shapes=("circle", "blob")))


def test_caption_hand_checked():
    scene = Scene((Obj("square", "blue", "small", 3, 3), Obj("circle", "red", "large", 0, 0),
                   Obj("cross", "white", "small", 1, 2)), grid=4)
    assert caption(scene) == ("a large red circle top left , a small white cross center , "
                              "a small blue square bottom right")


def test_caption_words_in_vocab(nano):
    vocab = set(words(nano))
    for rng in rngs(100):
        scene = sample_scene(rng, nano)
        text = caption(scene)
        assert text == text.lower() and set(text.split()) <= vocab
        assert text.count(" , ") == len(scene.objects) - 1


def _check_answer(scene: Scene, qa, cfg: DataConfig) -> None:
    """Recompute the answer from the scene independently of the generator."""
    w = qa.question.split()
    objs = scene.objects
    if qa.family == "color":
        hits = [o for o in objs if o.shape == w[4]]
        assert len(hits) == 1 and hits[0].color == qa.answer
    elif qa.family == "shape":
        hits = [o for o in objs if o.color == w[4]]
        assert len(hits) == 1 and hits[0].shape == qa.answer
    elif qa.family == "count":
        if w[2] == "objects":
            n = len(objs)
        elif w[2] in cfg.colors:
            n = sum(o.color == w[2] for o in objs)
        else:
            n = sum(plural(o.shape) == w[2] for o in objs)
        assert NUMBER_WORDS[n] == qa.answer
    elif qa.family == "exist":
        present = any(o.color == w[3] and o.shape == w[4] for o in objs)
        assert qa.answer == ("yes" if present else "no")
    elif qa.family == "spatial":
        (a,) = [o for o in objs if (o.color, o.shape) == (w[3], w[4])]
        (b,) = [o for o in objs if (o.color, o.shape) == (w[8], w[9])]
        expect = {(0, -1): "left", (0, 1): "right", (-1, 0): "above", (1, 0): "below"}
        key = (int(np.sign(a.row - b.row)), int(np.sign(a.col - b.col)))
        assert expect[key] == qa.answer
    else:
        raise AssertionError(qa.family)


def test_questions_are_correct_and_well_formed(nano):
    vocab = set(words(nano))
    families = Counter()
    for rng in rngs(300):
        scene = sample_scene(rng, nano)
        qas = scene_questions(scene, rng, 5, nano)
        assert len(qas) == 5
        assert len({q.question for q in qas}) == 5  # no duplicates
        for qa in qas:
            assert qa.family in FAMILIES
            assert qa.question.endswith(" ?") and len(qa.answer.split()) == 1
            assert set(qa.question.split()) | {qa.answer} <= vocab
            _check_answer(scene, qa, nano)
            families[qa.family] += 1
    shares = {f: families[f] / sum(families.values()) for f in FAMILIES}
    assert all(0.14 < s < 0.26 for s in shares.values()), shares


def test_answers_are_balanced(nano):
    answers = {f: Counter() for f in FAMILIES}
    for rng in rngs(1000):
        scene = sample_scene(rng, nano)
        for qa in scene_questions(scene, rng, 5, nano):
            answers[qa.family][qa.answer] += 1
    yes = answers["exist"]["yes"] / sum(answers["exist"].values())
    assert 0.45 < yes < 0.55
    spatial = answers["spatial"]
    assert set(spatial) == {"left", "right", "above", "below"}
    assert min(spatial.values()) / sum(spatial.values()) > 0.2
    assert "zero" in answers["count"]
    for fam, c in answers.items():
        assert c.most_common(1)[0][1] / sum(c.values()) < 0.55, (fam, c)


def test_question_errors(nano):
    scene = sample_scene(np.random.default_rng(0), nano)
    with pytest.raises(ValueError):
        scene_questions(scene, np.random.default_rng(0), -1, nano)
    odd = Scene((Obj("star", "orange", "small", 0, 0),))
    with pytest.raises(ValueError, match="pass cfg"):
        scene_questions(odd, np.random.default_rng(0), 2)
    many = scene_questions(Scene((Obj("circle", "red", "small", 0, 0),)), np.random.default_rng(0), 300, nano)
    assert len(many) == 300  # more than the distinct questions: duplicates only when unavoidable


def test_blind_answerer_is_weak_on_heldout(nano):
    train = as_qas(iter_rows(nano, "scenes", "train", render=False))
    heldout = as_qas(iter_rows(nano, "scenes", "heldout", render=False))
    assert len(heldout) == nano.heldout_scenes * nano.questions_per_scene
    for key in ("template", "question"):
        score = accuracy(BlindAnswerer(key).fit(train), heldout)
        print(f"\nblind ({key}) held-out accuracy {score['accuracy']:.3f} "
              f"{ {f: round(a, 3) for f, a in score['per_family'].items()} }")
        assert score["accuracy"] <= 0.40
    assert BlindAnswerer().fit(train).predict("is there a red circle ?") in ("yes", "no")
