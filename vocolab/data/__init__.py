"""Procedural data: scenes, moving-object clips, their questions, the tokenizer,
cached datasets, and the baselines that bound the benchmark's shortcuts.

Names are imported on first use (PEP 562), so that light modules such as
`vocolab.data.vocab` (which config validation needs) do not pull in torch,
transformers and datasets.
"""

from importlib import import_module

_EXPORTS = {
    "baselines": ("BlindAnswerer", "SingleFrameAnswerer", "accuracy", "as_qas", "best_single_frame"),
    "clips": ("TEMPORAL_FAMILIES", "Clip", "Track", "clip_caption", "clip_questions", "render_clip",
              "sample_clip"),
    "scenes": ("FAMILIES", "QA", "Obj", "Scene", "caption", "render_scene", "sample_scene", "scene_questions"),
    "storage": ("GENERATOR_VERSION", "cache_dir", "iter_rows", "load_clips", "load_scenes", "numpy_view"),
    "tokenizer": ("SPECIAL_TOKENS", "build_tokenizer", "encode_qa", "special_ids"),
    "vocab": ("words",),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'vocolab.data' has no attribute {name!r}")
    value = getattr(import_module(f"vocolab.data.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
