"""How the temporal study's two special cells train where they differ from the others.

Every cell of `vocolab temporal` trains for the study's steps from the shared scene model, except the `temporal`
cell (distilled from `video-upper`, it may take its own steps and objective, start from `video-upper` or a merge of
the two instead of the image VoCo model, read more questions per training clip, keep its teacher's answers, take
its own batch, attention backend and KL temperature) and `video-upper` (the reference, it may take more steps on
more clips). One object holds those settings so that the study checks them before any data or training, keys only
the cells they touch and records them in results.json.
"""

from __future__ import annotations

from dataclasses import dataclass

from vocolab.core.config import VOCO_OBJECTIVES, check_backend

# the models the temporal cell may start from; "merged": video-upper plus `temporal_merge` x the image VoCo
# model's move from the scene model both started from (`models.merging.task_arithmetic`)
TEMPORAL_STARTS = ("voco-image", "video-upper", "merged")


@dataclass(frozen=True)
class CellSettings:
    """The temporal cell's and video-upper's own training (None / the defaults: the study's)."""

    temporal_steps: int | None = None
    temporal_objective: str | None = None  # None: the recipe's train.voco_objective
    # the temporal cell's start: the image VoCo model (the paper's order) or the video upper bound (already
    # reads clips; seed 0 validation 0.617 -> 0.652 at 850 steps, RESULTS.md)
    temporal_init: str = "voco-image"
    # with temporal_init "merged": the share of the image VoCo model's move (seed 0 validation at 850 steps: 0.703
    # at 0.5, 0.728 at 1, 0.721 at 1.5; RESULTS.md)
    temporal_merge: float = 1.0
    # > 0: questions per training clip for the temporal cell (more answers per clip through the same K tokens);
    # the held-out clips keep theirs
    temporal_questions: int = 0
    # True: the teacher's answer logits are kept per training clip (`train.teacher_cache`): the same losses, a
    # step about a fifth cheaper on a CPU from the second epoch on
    temporal_teacher_cache: bool = False
    # > 0: the temporal cell's training batch (clips; 0: train.batch_size); on a CPU a batch of 16 costs under half
    # a step of 32, so the same minutes hold more steps (seed 0 validation, merged start: 0.783 -> 0.813; RESULTS.md)
    temporal_batch: int = 0
    # the temporal cell's attention backend (None: the study's `llm.attn_implementation`); "sdpa_frames" computes
    # only the `video` mask's blocks (`models.frame_attention`): the same numbers, a step ~13% cheaper on a CPU
    temporal_attention: str | None = None
    # the temporal cell's KL temperature (None: `train.distill_temperature`, 2); seed 0 at 2,600 steps: validation
    # 0.831 at 1 against 0.823 at 2, held-out 0.805 (retention 0.81) against 0.790 (0.79; RESULTS.md)
    temporal_temperature: float | None = None
    upper_steps: int | None = None
    upper_clips: int | None = None

    def check(self) -> None:
        """ValueError naming the setting, before any data is drawn or a model trained."""
        for name in ("temporal_steps", "upper_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"temporal: {name} must be >= 1, got {value}")
        if self.temporal_objective is not None and self.temporal_objective not in VOCO_OBJECTIVES:
            raise ValueError(f"temporal: temporal_objective {self.temporal_objective!r} is not one of "
                             f"{VOCO_OBJECTIVES}")
        if self.temporal_init not in TEMPORAL_STARTS:
            raise ValueError(f"temporal: temporal_init {self.temporal_init!r} is not one of {TEMPORAL_STARTS}")
        if self.temporal_init == "merged" and not self.temporal_merge > 0:
            raise ValueError(f"temporal: temporal_merge must be > 0, got {self.temporal_merge}")
        if self.temporal_teacher_cache and self.temporal_objective != "logits":
            raise ValueError(f"temporal: temporal_teacher_cache keeps the teacher's answer logits: it needs "
                             f"temporal_objective 'logits', got {self.temporal_objective!r}")
        if self.temporal_temperature is not None and not self.temporal_temperature > 0:
            raise ValueError(f"temporal: temporal_temperature must be > 0, got {self.temporal_temperature}")
        if self.temporal_attention is not None:
            check_backend(self.temporal_attention, "temporal: temporal_attention")
        for name in ("temporal_questions", "temporal_batch"):
            if getattr(self, name) < 0:
                raise ValueError(f"temporal: {name} must be >= 0, got {getattr(self, name)}")

    def temporal_overrides(self) -> dict:
        """The temporal cell's config overrides beyond K and the mask."""
        own = {"train.voco_objective": self.temporal_objective,
               "data.train_questions_per_scene": self.temporal_questions,
               "train.teacher_cache": self.temporal_teacher_cache,
               "train.batch_size": self.temporal_batch,
               "llm.attn_implementation": self.temporal_attention,
               "train.distill_temperature": self.temporal_temperature}
        return {name: value for name, value in own.items() if value}  # unset (None, 0, False): the study's

    def temporal_key(self) -> dict:
        """What the temporal model's key holds beyond its config: the start, only when it is not the
        default (so models trained before the setting existed keep their keys), and the merge's share."""
        merge = {"merge": self.temporal_merge} if self.temporal_init == "merged" else {}
        return ({"init": self.temporal_init} if self.temporal_init != "voco-image" else {}) | merge

    def record(self) -> dict:
        """The temporal cell's settings as results.json records them (the merge's share only for a merge)."""
        names = ("temporal_objective", "temporal_init", "temporal_questions", "temporal_teacher_cache",
                 "temporal_batch", "temporal_attention", "temporal_temperature")
        merge = {"temporal_merge": self.temporal_merge} if self.temporal_init == "merged" else {}
        return {name: getattr(self, name) for name in names} | merge

    def temporal_start(self, model_of, scene_model):
        """The temporal cell's start: `model_of(name)` (the study's trained model) or, for "merged",
        video-upper plus `temporal_merge` x (voco-image - `scene_model`), the model both started from."""
        if self.temporal_init != "merged":
            return model_of(self.temporal_init)
        from vocolab.models.merging import task_arithmetic

        return task_arithmetic(model_of("video-upper"), model_of("voco-image"), scene_model, self.temporal_merge)


__all__ = ["TEMPORAL_STARTS", "CellSettings"]
