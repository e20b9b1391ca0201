"""The training-only data knobs (`data.captions`, `data.train_extra_families`, `data.train_jitter`,
`data.train_min_objects`, `data.train_clip_frames`) change what the model is trained on and never the held-out split."""

from dataclasses import replace

import numpy as np
import pytest

from vocolab.core.config import DataConfig
from vocolab.core.presets import preset
from vocolab.data.clips import clip_step
from vocolab.data.scenes import Scene, extra_questions, render_scene, spatial_relation
from vocolab.data.storage import cache_spec, iter_rows
from vocolab.data.vocab import check_data_config, words

PLAIN = DataConfig(train_scenes=20, heldout_scenes=20, captions="coarse", train_extra_families=())
KNOBS = DataConfig(train_scenes=20, heldout_scenes=20, captions="exact", train_extra_families=("row", "column"),
                   train_jitter=0.3)


def _rows(cfg, split):
    return list(iter_rows(cfg, "scenes", split))


def test_the_heldout_questions_and_images_do_not_change():
    for plain, knobs in zip(_rows(PLAIN, "heldout"), _rows(KNOBS, "heldout")):
        assert plain["question"] == knobs["question"] and plain["answer"] == knobs["answer"]
        assert np.array_equal(plain["image"], knobs["image"])
        assert plain["objects"] == knobs["objects"]


def test_training_scenes_get_position_questions_on_top_of_the_same_ones():
    for plain, knobs in zip(_rows(PLAIN, "train"), _rows(KNOBS, "train")):
        n = len(plain["question"])
        assert knobs["question"][:n] == plain["question"] and knobs["answer"][:n] == plain["answer"]
        extra = list(zip(knobs["question"][n:], knobs["answer"][n:], knobs["family"][n:]))
        assert {f for _, _, f in extra} <= {"row", "column"} and extra
        scene = Scene.from_json(knobs["objects"])
        for question, answer, family in extra:
            color, shape = question.split(" the ")[1].split(" in ?")[0].split()
            (obj,) = [o for o in scene.objects if (o.color, o.shape) == (color, shape)]
            index = obj.row if family == "row" else obj.col
            assert answer == ("one", "two", "three", "four")[int(index)]


def test_an_extra_spatial_question_is_a_new_true_relation():
    cfg = DataConfig(train_scenes=40, heldout_scenes=20, train_extra_families=("row", "column", "spatial"))
    asked = 0
    for plain, knobs in zip(_rows(PLAIN, "train"), _rows(cfg, "train")):
        n = len(plain["question"])
        extra = [(q, a) for q, a, f in zip(knobs["question"][n:], knobs["answer"][n:], knobs["family"][n:])
                 if f == "spatial"]
        assert len(extra) <= 1 and not {q for q, _ in extra} & set(plain["question"])
        scene = Scene.from_json(knobs["objects"])
        for question, answer in extra:
            a, b = (tuple(p.split(" ?")[0].split()[-2:]) for p in question.split(" relative to "))
            (oa,), (ob,) = ([o for o in scene.objects if (o.color, o.shape) == key] for key in (a, b))
            assert answer == spatial_relation(oa, ob)
            asked += 1
    assert asked >= 5


def test_an_axis_question_names_the_line_two_objects_share_and_only_it_adds_words():
    cfg = DataConfig(train_scenes=40, heldout_scenes=20, train_extra_families=("row", "column", "spatial", "axis"))
    answers = []
    for plain, knobs in zip(_rows(PLAIN, "train"), _rows(cfg, "train")):
        n = len(plain["question"])
        extra = [(q, a) for q, a, f in zip(knobs["question"][n:], knobs["answer"][n:], knobs["family"][n:])
                 if f == "axis"]
        assert len(extra) <= 1
        scene = Scene.from_json(knobs["objects"])
        for question, answer in extra:
            a, b = (tuple(p.split()[-2:]) for p in question.split(" in one row")[0][4:].split(" and "))
            (oa,), (ob,) = ([o for o in scene.objects if (o.color, o.shape) == key] for key in (a, b))
            assert answer == {"left": "row", "right": "row", "above": "column", "below": "column"}[
                spatial_relation(oa, ob)]
            assert set(question.split()) <= set(words(cfg))
            answers.append(answer)
    assert answers.count("row") >= 5 and answers.count("column") >= 5  # both asked, balanced per scene
    # the default vocabulary (and so every trained stage's key) is the one without the family
    assert "or" in words(cfg) and "or" not in words(preset("nano").data)
    assert set(words(cfg)) - set(words(preset("nano").data)) == {"or"}


def test_exact_captions_name_the_lattice_row_and_column():
    row = _rows(KNOBS, "train")[0]
    scene = Scene.from_json(row["objects"])
    first = sorted(scene.objects, key=lambda o: (o.row, o.col))[0]
    names = ("one", "two", "three", "four")
    assert row["caption"].startswith(f"a {first.size} {first.color} {first.shape} in row {names[int(first.row)]} "
                                     f"column {names[int(first.col)]}")
    assert set(row["caption"].split()) <= set(words(KNOBS))


def test_jitter_moves_the_drawing_not_the_scene():
    plain, knobs = _rows(PLAIN, "train")[0], _rows(KNOBS, "train")[0]
    assert plain["objects"] == knobs["objects"] and not np.array_equal(plain["image"], knobs["image"])
    scene = Scene.from_json(plain["objects"])
    shifted = render_scene(scene, PLAIN, None, np.full((len(scene.objects), 2), 0.25))
    unshifted = render_scene(scene, PLAIN, None, np.zeros((len(scene.objects), 2)))
    assert np.array_equal(unshifted, render_scene(scene, PLAIN, None))
    ys, xs = np.nonzero((shifted != unshifted).any(-1))
    assert len(ys) > 0  # a quarter cell (4 px at nano) moves every object


def test_the_knobs_are_checked_and_keyed():
    with pytest.raises(ValueError, match="data.train_jitter"):
        preset("nano", **{"data.train_jitter": 0.6})
    with pytest.raises(ValueError, match="data.train_min_objects"):
        preset("nano", **{"data.train_min_objects": 7})
    with pytest.raises(ValueError, match="data.train_clip_frames"):
        preset("nano", **{"data.train_clip_frames": 1.5})
    with pytest.raises(ValueError, match="data.captions"):
        preset("nano", **{"data.captions": "fine"})
    with pytest.raises(ValueError, match="data.train_extra_families"):
        check_data_config(DataConfig(train_extra_families=("where",)))
    with pytest.raises(ValueError, match="unknown families"):
        extra_questions(Scene(()), np.random.default_rng(0), ("where",))
    assert cache_spec(PLAIN, "scenes", "train")[0] != cache_spec(KNOBS, "scenes", "train")[0]
    # with every knob off, none is hashed: caches built before the knobs existed stay valid
    assert not {"captions", "train_extra_families", "train_jitter", "train_min_objects", "train_clip_frames"} & set(
        cache_spec(PLAIN, "scenes", "train")[1])


def test_fewer_objects_in_training_scenes_only():
    few = DataConfig(train_scenes=200, heldout_scenes=60, train_min_objects=1)
    counts = {split: [len(Scene.from_json(r["objects"]).objects) for r in _rows(few, split)]
              for split in ("train", "heldout")}
    assert min(counts["train"]) == 1 and max(counts["train"]) <= few.max_objects
    assert min(counts["heldout"]) == few.min_objects == 3
    plain = DataConfig(train_scenes=200, heldout_scenes=60)
    assert [r["question"] for r in _rows(plain, "heldout")] == [r["question"] for r in _rows(few, "heldout")]
    assert cache_spec(few, "scenes", "train")[0] != cache_spec(plain, "scenes", "train")[0]


def test_fewer_objects_in_training_clips_only():
    from vocolab.data.clips import Clip

    few = DataConfig(train_clips=120, heldout_clips=30, train_min_objects=1)
    plain = DataConfig(train_clips=120, heldout_clips=30)
    counts = {split: [len(Clip.from_json(r["objects"]).tracks) for r in iter_rows(few, "clips", split, render=False)]
              for split in ("train", "heldout")}
    assert min(counts["train"]) < few.min_objects and max(counts["train"]) <= few.max_objects
    assert min(counts["heldout"]) >= few.min_objects
    for a, b in zip(iter_rows(plain, "clips", "heldout"), iter_rows(few, "clips", "heldout")):
        assert a["objects"] == b["objects"] and a["question"] == b["question"]
        assert np.array_equal(a["frames"], b["frames"])
    assert cache_spec(few, "clips", "train")[0] != cache_spec(plain, "clips", "train")[0]
    # off, it is not hashed: the clip caches built before it existed stay valid
    assert "train_min_objects" not in cache_spec(plain, "clips", "train")[1]


def test_clip_frame_scenes_put_training_objects_between_cells_one_cell_apart():
    """`data.train_clip_frames`: that share of training scenes is a frame of a fresh clip (objects on
    the clip's finer lattice, never closer than a cell); the rest and every held-out scene stay."""
    step = clip_step(PLAIN.frames)
    framed = DataConfig(train_scenes=60, heldout_scenes=20, captions="coarse", train_extra_families=(),
                        train_clip_frames=0.5)
    plain_rows, framed_rows = _rows(replace(framed, train_clip_frames=0.0), "train"), _rows(framed, "train")
    kept = [p["objects"] == f["objects"] for p, f in zip(plain_rows, framed_rows)]
    assert 15 <= sum(kept) <= 45  # about half drawn anew
    off = 0
    for row, same in zip(framed_rows, kept):
        scene = Scene.from_json(row["objects"])
        if same:
            continue
        assert len(scene.objects) >= 1 and scene.grid == PLAIN.grid
        for o in scene.objects:
            for v in (o.row, o.col):
                assert abs(v / step - round(v / step)) < 1e-4 and 0 <= v <= PLAIN.grid - 1
            off += o.row != int(o.row) or o.col != int(o.col)
        for a in scene.objects:
            for b in scene.objects:
                assert a is b or max(abs(a.row - b.row), abs(a.col - b.col)) >= 1 - 1e-6
        # its questions are about that scene: a colour question names one of its shapes
        for q, a, fam in zip(row["question"], row["answer"], row["family"]):
            if fam == "color":
                shape = q.split("the ")[1].split(" ?")[0]
                assert a == next(o.color for o in scene.objects if o.shape == shape)
    assert off >= 10  # most frame objects sit between cells
    for plain, knobs in zip(_rows(PLAIN, "heldout"), _rows(framed, "heldout")):
        assert plain["objects"] == knobs["objects"] and np.array_equal(plain["image"], knobs["image"])
    assert cache_spec(framed, "scenes", "train")[1]["train_clip_frames"] == 0.5
