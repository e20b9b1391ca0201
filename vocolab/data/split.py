"""One split (train, validation or held-out) of scenes or clips, held in memory: the uint8
images (or, with `data.storage = "render"`, an array-like that draws them when read) and,
per item, its caption, questions, answers, families and templates, read once from the
cached `datasets` split; plus the frozen CLIP features when a stage attached them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vocolab.core.config import Config
from vocolab.data.rendered import RenderedImages
from vocolab.data.storage import load_split, numpy_view, stores_pixels


@dataclass
class Split:
    """One split held in memory: uint8 images (or clips) and their texts."""

    images: np.ndarray  # [N, H, W, 3] or [N, T, H, W, 3] (or `RenderedImages`, indexed alike)
    captions: list[str]
    questions: list[list[str]]
    answers: list[list[str]]
    families: list[list[str]]
    templates: list[list[str]]
    features: torch.Tensor | None = None  # frozen CLIP features [N, (T,) V, Dv]
    features_of: str | None = None  # fingerprint of the vision tower that made them

    @classmethod
    def load(cls, cfg: Config, kind: str, split: str, n: int | None = None, progress: bool = True) -> "Split":
        ds = load_split(cfg.data, kind, split, n=n, progress=progress)
        if not stores_pixels(cfg.data, split):
            images = RenderedImages(cfg.data, kind, split, len(ds))
        else:
            pixels = numpy_view(ds.select_columns(["frames" if kind == "clips" else "image"]))
            images = pixels[:][pixels.column_names[0]]
        return cls(images=images, captions=list(ds["caption"]),
                   questions=list(ds["question"]), answers=list(ds["answer"]), families=list(ds["family"]),
                   templates=list(ds["template"]))

    @property
    def frames(self) -> int:
        """Frames per item: T for clips, 1 for scenes (and for clips cut to one frame)."""
        return self.images.shape[1] if self.images.ndim == 5 else 1

    def examples(self, task: str, turns: bool = False) -> list[tuple[int, int]]:
        """(item, question) index pairs; question -1 stands for the caption (or, with
        `turns`, for all of the item's questions)."""
        if task == "qa" and not turns:
            return [(i, j) for i, qs in enumerate(self.questions) for j in range(len(qs))]
        return [(i, -1) for i in range(len(self.captions))]


def vision_fingerprint(module: torch.nn.Module) -> str:
    """Cheap identity of a module's weights: cached features are reused only for the same tower."""
    with torch.no_grad():
        return ",".join(f"{p.double().sum().item():.10e}" for p in module.parameters())
