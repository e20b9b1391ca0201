"""Procedural data: scenes and moving-object clips with their questions, the word-level
tokenizer, cached `datasets` splits, and the batches the models read (the Lightning
data module is `data.module.VoCoDataModule`)."""

from vocolab.data.batching import Batch, make_batch
from vocolab.data.clips import TEMPORAL_FAMILIES, Clip, clip_questions, render_clip, sample_clip
from vocolab.data.scenes import FAMILIES, QA, Scene, caption, render_scene, sample_scene, scene_questions
from vocolab.data.split import Split
from vocolab.data.storage import cache_root, iter_rows, load_clips, load_scenes, numpy_view
from vocolab.data.tokenizer import SPECIAL_TOKENS, build_tokenizer, special_ids
from vocolab.data.vocab import PALETTE

__all__ = ["FAMILIES", "PALETTE", "QA", "SPECIAL_TOKENS", "TEMPORAL_FAMILIES", "Batch", "Clip", "Scene", "Split",
           "build_tokenizer", "cache_root", "caption", "clip_questions", "iter_rows", "load_clips", "load_scenes",
           "make_batch", "numpy_view", "render_clip", "render_scene", "sample_clip", "sample_scene",
           "scene_questions", "special_ids"]
