"""A split's images drawn on demand (`data.storage = "render"`).

Every row of a split comes from its own seed (`data.storage.item_rng`), so its pixels can
be drawn again whenever they are read, identical to the ones a stored split holds. For a
preset whose images would not fit on a disk (base: 336 px scenes and 8-frame clips) the
cached dataset then keeps only the text and the scene, and `RenderedImages` stands where
the uint8 array would: it indexes like one (an item, a slice, a list or array of items,
then any further axes) and renders only what is asked for.
"""

from __future__ import annotations

import numpy as np

from vocolab.core.config import DataConfig


class RenderedImages:
    """`[N, H, W, 3]` scenes or `[N, T, H, W, 3]` clips of one split, rendered when indexed."""

    def __init__(self, cfg: DataConfig, kind: str, split: str, count: int, select: tuple = ()):
        from vocolab.data.storage import questions_per_item, split_seed

        self.cfg, self.kind, self.split, self.count, self.select = cfg, kind, split, count, select
        self.seed, self.questions = split_seed(cfg, split), questions_per_item(cfg, split)
        one = self._render(0) if count else np.zeros(self._item_shape(), np.uint8)
        self.item_shape = one.shape

    def _item_shape(self) -> tuple:
        s = self.cfg.image_size
        shape = (s, s, 3) if self.kind == "scenes" else (self.cfg.frames, s, s, 3)
        return np.zeros(shape, np.uint8)[self.select].shape

    def _render(self, index: int) -> np.ndarray:
        from vocolab.data.storage import clip_row, scene_row

        if not 0 <= index < self.count:
            raise IndexError(f"RenderedImages: item {index} outside 0..{self.count - 1}")
        row_fn, column = (scene_row, "image") if self.kind == "scenes" else (clip_row, "frames")
        row = row_fn(self.cfg, self.seed, index, self.questions, render=True, train=self.split == "train")
        return row[column][self.select]

    @property
    def shape(self) -> tuple:
        return (self.count, *self.item_shape)

    @property
    def ndim(self) -> int:
        return 1 + len(self.item_shape)

    dtype = np.dtype(np.uint8)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index):
        if isinstance(index, tuple):
            first, rest = index[0], index[1:]
            if isinstance(first, slice) and first == slice(None) and rest:  # a view over every item
                return RenderedImages(self.cfg, self.kind, self.split, self.count, self.select + rest)
            items = self[first]
            return items[rest] if np.ndim(first) == 0 else items[(slice(None), *rest)]
        if isinstance(index, (int, np.integer)):
            return self._render(int(index) % self.count if index < 0 else int(index))
        if isinstance(index, slice):
            index = range(*index.indices(self.count))
        picked = [int(i) for i in np.asarray(index).reshape(-1)]
        if not picked:
            return np.zeros((0, *self.item_shape), np.uint8)
        return np.stack([self._render(i) for i in picked])

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype)


__all__ = ["RenderedImages"]
