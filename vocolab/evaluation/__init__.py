"""Measuring: held-out runs with exact-match accuracy per family, bounds and retention,
the language-prior baselines, streamed evaluation on clips, attention diagnostics
(`evaluation.attention`, which needs the training code) and the scaling-law fit."""

from vocolab.evaluation.baselines import BlindAnswerer, SingleFrameAnswerer, accuracy, as_qas, best_single_frame
from vocolab.evaluation.clips import clip_run, predict_frames
from vocolab.evaluation.confusion import answer_confusion, grouped_accuracy
from vocolab.evaluation.heldout import Questions, bound_runs, model_run, predict, standard_runs
from vocolab.evaluation.metrics import FamilyExactMatch, retention

__all__ = ["BlindAnswerer", "FamilyExactMatch", "Questions", "SingleFrameAnswerer", "accuracy", "answer_confusion",
           "as_qas", "best_single_frame", "bound_runs", "clip_run", "grouped_accuracy", "model_run", "predict",
           "predict_frames", "retention", "standard_runs"]
