"""Procedural data: scenes and moving-object clips with their questions, the word-level
tokenizer, cached `datasets` splits, and the batches the models read."""

from vocolab.data.clips import TEMPORAL_FAMILIES, Clip, clip_questions, render_clip, sample_clip
from vocolab.data.scenes import FAMILIES, QA, Scene, caption, render_scene, sample_scene, scene_questions
from vocolab.data.storage import cache_root, iter_rows, load_clips, load_scenes
from vocolab.data.tokenizer import SPECIAL_TOKENS, build_tokenizer, special_ids

__all__ = ["FAMILIES", "QA", "SPECIAL_TOKENS", "TEMPORAL_FAMILIES", "Clip", "Scene", "build_tokenizer", "cache_root",
           "caption", "clip_questions", "iter_rows", "load_clips", "load_scenes", "render_clip", "render_scene",
           "sample_clip", "sample_scene", "scene_questions", "special_ids"]
