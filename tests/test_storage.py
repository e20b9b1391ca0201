"""Dataset storage: schema, determinism, and a cache that is reused only when valid."""

import json
import os
from dataclasses import replace

import numpy as np
import pytest

from vocolab.data.clips import Clip, render_clip
from vocolab.data.scenes import NOISE, Scene, render_scene
from vocolab.data.storage import cache_dir, cache_root, features, iter_rows, load_clips, load_scenes, numpy_view


@pytest.fixture
def nano(nano):
    """The nano data with its training pixels stored as arrays and no extra training
    questions: every split has the same schema and questions_per_scene questions."""
    return replace(nano, storage="arrays", train_extra_families=())


def _arrow_files(folder):
    return sorted((folder / "dataset").glob("*.arrow"))


def test_bad_arguments(nano, tmp_path):
    with pytest.raises(ValueError, match="split"):
        load_scenes(nano, "test", root=tmp_path)
    with pytest.raises(ValueError, match="n must be"):
        load_scenes(nano, "train", root=tmp_path, n=0)
    with pytest.raises(ValueError, match="DataConfig"):
        load_scenes({"image_size": 64}, "train", root=tmp_path)
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())


def test_scene_rows_schema_and_content(nano, tmp_path):
    ds = load_scenes(nano, "train", root=tmp_path, n=6, progress=False)
    assert len(ds) == 6 and ds.features == features(nano, "scenes")
    rows = numpy_view(ds)[:]
    assert rows["image"].dtype == np.uint8 and rows["image"].shape == (6, 64, 64, 3)
    row = ds[0]
    assert len(row["question"]) == len(row["answer"]) == len(row["family"]) == nano.questions_per_scene
    # the stored image is the stored scene, rendered with the item's own noise
    scene = Scene.from_json(row["objects"])
    expected = render_scene(scene, nano).astype(int)
    assert np.abs(rows["image"][0].astype(int) - expected).max() <= NOISE
    assert (rows["image"][0] == next(iter_rows(nano, "scenes", "train", n=1))["image"]).all()
    assert not list(tmp_path.glob("data/.tmp-*"))  # temporary build folders are gone


def test_clip_rows(nano, tmp_path):
    ds = load_clips(nano, "heldout", root=tmp_path, n=3, progress=False)
    frames = numpy_view(ds)[:]["frames"]
    assert frames.shape == (3, nano.frames, 64, 64, 3) and frames.dtype == np.uint8
    clip = Clip.from_json(ds[1]["objects"])
    clean = render_clip(clip, nano).astype(int)
    assert np.abs(frames[1].astype(int) - clean).max() <= NOISE  # same clip, plus slight noise


def test_deterministic_and_splits_differ(nano, tmp_path):
    a = numpy_view(load_scenes(nano, "train", root=tmp_path / "a", n=5, progress=False))[:]["image"]
    b = numpy_view(load_scenes(nano, "train", root=tmp_path / "b", n=5, progress=False))[:]["image"]
    h = numpy_view(load_scenes(nano, "heldout", root=tmp_path / "a", n=5, progress=False))[:]["image"]
    assert (a == b).all()
    assert not (a == h).all(axis=(1, 2, 3)).any()
    prefix = numpy_view(load_scenes(nano, "train", root=tmp_path / "a", n=3, progress=False))[:]["image"]
    assert (prefix == a[:3]).all()  # a quick (smaller) split is a prefix of the bigger one


def test_cache_reused_when_same(nano, tmp_path):
    load_scenes(nano, "train", root=tmp_path, n=4, progress=False)
    folder = cache_dir(nano, "scenes", "train", n=4, root=tmp_path)
    marker = folder / "marker"
    marker.write_text("still here")
    stamp = os.stat(folder / "config.json").st_mtime_ns
    ds = load_scenes(nano, "train", root=tmp_path, n=4, progress=False)
    assert marker.exists() and os.stat(folder / "config.json").st_mtime_ns == stamp
    assert len(ds) == 4
    stored = json.loads((folder / "config.json").read_text())
    assert stored["count"] == 4 and stored["seed"] == nano.train_seed


def test_config_change_means_new_data(nano, tmp_path):
    load_scenes(nano, "train", root=tmp_path, n=4, progress=False)
    other = replace(nano, colors=nano.colors[:3])
    ds = load_scenes(other, "train", root=tmp_path, n=4, progress=False)
    assert cache_dir(other, "scenes", "train", n=4, root=tmp_path) != cache_dir(nano, "scenes", "train", n=4,
                                                                                root=tmp_path)
    assert len(list((tmp_path / "data").iterdir())) == 2
    for row in ds:
        assert {o["color"] for o in json.loads(row["objects"])["objects"]} <= set(other.colors)
    # patch_size does not change the data, so it shares the cache
    assert cache_dir(replace(nano, patch_size=16), "scenes", "train", n=4, root=tmp_path) == \
        cache_dir(nano, "scenes", "train", n=4, root=tmp_path)


def test_train_questions_per_scene_changes_only_the_train_split(nano, tmp_path):
    more = replace(nano, train_questions_per_scene=9)
    train = load_scenes(more, "train", root=tmp_path, n=3, progress=False)
    assert all(len(q) == 9 for q in train["question"])
    assert all(len(set(q)) == 9 for q in train["question"])  # nine distinct questions per scene
    assert cache_dir(more, "scenes", "train", n=3, root=tmp_path) != cache_dir(nano, "scenes", "train", n=3,
                                                                               root=tmp_path)
    # held-out items keep questions_per_scene and share the plain config's cache
    assert cache_dir(more, "scenes", "heldout", n=3, root=tmp_path) == cache_dir(nano, "scenes", "heldout", n=3,
                                                                                 root=tmp_path)
    heldout = load_scenes(more, "heldout", root=tmp_path, n=3, progress=False)
    assert all(len(q) == nano.questions_per_scene for q in heldout["question"])
    # the scenes themselves are the same ones, only more is asked about them
    plain = load_scenes(nano, "train", root=tmp_path, n=3, progress=False)
    assert list(train["objects"]) == list(plain["objects"])
    clips = load_clips(more, "train", root=tmp_path, n=2, progress=False)
    assert all(len(q) == 9 for q in clips["question"])


def test_stale_config_is_rebuilt(nano, tmp_path):
    load_scenes(nano, "train", root=tmp_path, n=4, progress=False)
    folder = cache_dir(nano, "scenes", "train", n=4, root=tmp_path)
    (folder / "marker").write_text("x")
    stored = json.loads((folder / "config.json").read_text())
    stored["generator_version"] = -1
    (folder / "config.json").write_text(json.dumps(stored))
    ds = load_scenes(nano, "train", root=tmp_path, n=4, progress=False)
    assert not (folder / "marker").exists() and len(ds) == 4
    assert json.loads((folder / "config.json").read_text())["generator_version"] != -1


def test_corrupt_folder_is_rebuilt(nano, tmp_path):
    ref = numpy_view(load_scenes(nano, "train", root=tmp_path, n=4, progress=False))[:]["image"]
    folder = cache_dir(nano, "scenes", "train", n=4, root=tmp_path)
    (arrow,) = _arrow_files(folder)
    arrow.write_bytes(arrow.read_bytes()[:1000])  # truncated
    (folder / "marker").write_text("x")
    again = numpy_view(load_scenes(nano, "train", root=tmp_path, n=4, progress=False))[:]["image"]
    assert (again == ref).all() and not (folder / "marker").exists()
    (folder / "config.json").unlink()  # half-written folder
    assert len(load_scenes(nano, "train", root=tmp_path, n=4, progress=False)) == 4


def test_default_root_from_env(nano, tmp_path, monkeypatch):
    monkeypatch.setenv("VOCOLAB_CACHE", str(tmp_path / "env-root"))
    assert cache_root() == tmp_path / "env-root"
    load_clips(nano, "train", n=2, progress=False)
    assert len(list((tmp_path / "env-root" / "data").glob("clips-train-*"))) == 1
