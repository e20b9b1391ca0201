"""`data.storage = "render"`: the training split keeps text only and draws every image
again from its seed; what comes back is exactly what the stored split holds, at a fraction
of the disk."""

import numpy as np

from vocolab.core.config import DataConfig
from vocolab.core.presets import preset
from vocolab.data.split import Split
from vocolab.data.storage import cache_dir, load_scenes, numpy_view


def _disk(path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_rendered_images_equal_the_stored_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("VOCOLAB_CACHE", str(tmp_path))
    base = {"data.train_scenes": 12, "data.heldout_scenes": 6, "data.train_clips": 5, "data.heldout_clips": 4,
            "data.train_jitter": 0.3, "data.captions": "exact"}
    stored = preset("nano", **base, **{"data.storage": "arrays"})
    drawn = preset("nano", **base, **{"data.storage": "render"})
    for kind in ("scenes", "clips"):
        a, b = Split.load(stored, kind, "train", progress=False), Split.load(drawn, kind, "train", progress=False)
        assert isinstance(a.images, np.ndarray) and not isinstance(b.images, np.ndarray)
        assert b.images.shape == a.images.shape and len(b.images) == len(a.images)
        assert np.array_equal(np.asarray(b.images), a.images)
        assert np.array_equal(b.images[[3, 1]], a.images[[3, 1]]) and np.array_equal(b.images[2], a.images[2])
        assert np.array_equal(b.images[1:3], a.images[1:3])
        assert b.questions == a.questions and b.captions == a.captions
        if kind == "clips":  # a view of one frame of every clip, as the temporal study takes it
            assert np.array_equal(np.asarray(b.images[:, 1:2]), a.images[:, 1:2])
            assert b.images[:, 2].shape == a.images[:, 2].shape
        folder_a = cache_dir(stored.data, kind, "train", root=tmp_path)
        folder_b = cache_dir(drawn.data, kind, "train", root=tmp_path)
        assert folder_a != folder_b and _disk(folder_b) < _disk(folder_a) / 5


def test_only_the_training_split_is_drawn_when_read(tmp_path, monkeypatch):
    """The held-out split keeps its pixels (the one people look at): the same cached folder,
    with an image column, under either storage."""
    monkeypatch.setenv("VOCOLAB_CACHE", str(tmp_path))
    stored = preset("nano", **{"data.heldout_scenes": 4, "data.storage": "arrays"})
    drawn = preset("nano", **{"data.heldout_scenes": 4, "data.storage": "render"})
    assert cache_dir(stored.data, "scenes", "heldout") == cache_dir(drawn.data, "scenes", "heldout")
    assert cache_dir(stored.data, "scenes", "train") != cache_dir(drawn.data, "scenes", "train")
    rows = numpy_view(load_scenes(drawn.data, "heldout", progress=False))
    assert rows[:]["image"].shape == (4, 64, 64, 3)
    assert isinstance(Split.load(drawn, "scenes", "heldout", progress=False).images, np.ndarray)


def test_which_presets_draw_their_pixels():
    assert preset("base").data.storage == "render" and DataConfig().storage == "render"
    assert preset("small").data.storage == "arrays"
