"""The tiny model configuration the model, backend, cache and checkpoint tests share."""

from vocolab.config import preset
from vocolab.layout import SpecialIds

SPECIAL = SpecialIds(bos=1, eos=3, pad=0, image=4, voco=5)
VOCAB = 40
V = 16  # 16 px images, 4 px patches


def tiny_cfg(**overrides):
    base = {"data.image_size": 16, "data.patch_size": 4, "data.grid": 2, "data.max_objects": 4,
            "llm.hidden_size": 32, "llm.layers": 2, "llm.heads": 2, "llm.kv_heads": 2,
            "llm.intermediate_size": 64, "llm.max_positions": 128,
            "vision.hidden_size": 32, "vision.heads": 2, "vision.intermediate_size": 64,
            "vision.text_hidden_size": 32, "vision.projection_dim": 16}
    return preset("nano", **{**base, **overrides})
