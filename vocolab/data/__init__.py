"""Procedural data: scenes, moving-object clips, their questions, the tokenizer,
cached datasets, and the baselines that bound the benchmark's shortcuts."""

from vocolab.data.baselines import (BlindAnswerer, SingleFrameAnswerer, accuracy, as_qas,
                                    best_single_frame)
from vocolab.data.clips import (TEMPORAL_FAMILIES, Clip, Track, clip_caption, clip_questions,
                                render_clip, sample_clip)
from vocolab.data.scenes import (FAMILIES, QA, Obj, Scene, caption, render_scene, sample_scene,
                                 scene_questions)
from vocolab.data.storage import (GENERATOR_VERSION, cache_dir, iter_rows, load_clips, load_scenes,
                                  numpy_view)
from vocolab.data.tokenizer import SPECIAL_TOKENS, build_tokenizer, encode_qa, special_ids
from vocolab.data.vocab import words

__all__ = [
    "FAMILIES", "GENERATOR_VERSION", "QA", "SPECIAL_TOKENS", "TEMPORAL_FAMILIES", "BlindAnswerer",
    "Clip", "Obj", "Scene", "SingleFrameAnswerer", "Track", "accuracy", "as_qas", "best_single_frame",
    "build_tokenizer", "cache_dir", "caption", "clip_caption", "clip_questions", "encode_qa",
    "iter_rows", "load_clips", "load_scenes", "numpy_view", "render_clip", "render_scene",
    "sample_clip", "sample_scene", "scene_questions", "special_ids", "words",
]
