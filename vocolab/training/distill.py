"""The `distill` stage: VoCo training as (explicit) distillation from the upper bound.

The VoCo-LLaMA paper writes its objective as a distillation, a KL between the two
answer distributions: the student
(the LLM whose text sees only the VoCo tokens) should predict what the teacher (the
same LLM seeing every image token) predicts. The official code trains plain
next-token loss under the VoCo mask ("implicit" distillation). `DistillModule`
offers the whole spectrum, picked by `objective`:

* `implicit`:          next-token loss under the `voco` mask (exactly `VLMModule(mask="voco")`);
* `logits`:            + T^2 * KL(teacher || student) of the temperature-softened
                       next-token distributions at the answer positions (`answer_kl`);
* `attention`:         + MSE between the student's and the teacher's per-layer hidden
                       states at the text positions (`text_hidden_mse`): how the
                       teacher's text reads the image is distilled into how the
                       student's text reads the VoCo tokens;
* `logits+attention`:  both.

The teacher is a frozen upper-bound `VoCoVLM` run under the `causal` mask on the
*same* batch: the upper bound is trained with the same sequences, VoCo slots
included, so one batch serves both. It is kept outside the module's parameters (not
trained, not saved in the student's checkpoint) and comes from `teacher_from` (a
checkpoint read with `training.loading.load_model`) or `set_teacher(vlm)`.
Where the two models' attention actually goes is read off by `evaluation.attention`.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from vocolab.core.config import VOCO_OBJECTIVES
from vocolab.core.layout import IGNORE_INDEX, Layout
from vocolab.data.batching import Batch
from vocolab.models.inputs import model_device
from vocolab.models.vlm import VoCoVLM
from vocolab.training.modules import VLMModule
from vocolab.training.teacher_cache import AnswerLogits

OBJECTIVES = VOCO_OBJECTIVES

STUDENT_MASKS = ("voco", "video")  # the teacher always runs under "causal"


def answer_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
              temperature: float = 1.0) -> torch.Tensor:
    """T^2 * KL(teacher || student) averaged over the scored answer positions.

    Logits `[B, L, vocab]` are shifted by one exactly like the next-token loss: the
    prediction at position i is scored when `labels[:, i + 1]` is not -100 (every
    answer token and EOS of every scored span). Both distributions are softened by
    `temperature`; the T^2 factor keeps gradient magnitudes comparable across T
    (Hinton et al.). The teacher is detached. No scored position gives 0.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"answer_kl: student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ in shape")
    if student_logits.dim() != 3 or tuple(labels.shape) != tuple(student_logits.shape[:2]):
        raise ValueError(f"answer_kl: expected logits [B, L, vocab] and labels [B, L], got "
                         f"{tuple(student_logits.shape)} and {tuple(labels.shape)}")
    if not temperature > 0:
        raise ValueError(f"answer_kl: temperature must be > 0, got {temperature}")
    # a weighted mean over the scored positions: no data-dependent indexing, so the device
    # never waits for the host
    scored = (labels[:, 1:].to(student_logits.device) != IGNORE_INDEX).float()
    student = student_logits[:, :-1].float() / temperature
    teacher = teacher_logits[:, :-1].detach().float() / temperature
    kl = F.kl_div(F.log_softmax(student, -1), F.log_softmax(teacher, -1), log_target=True,
                  reduction="none").sum(-1)
    return (kl * scored).sum() / scored.sum().clamp(min=1) * temperature**2


def text_positions(layouts: Sequence[Layout], length: int) -> torch.Tensor:
    """`[B, length]` bool: True at each sample's text positions (`layout.text`:
    question(s), answer(s), EOS; never BOS, image, VoCo or padding)."""
    mask = torch.zeros(len(layouts), length, dtype=torch.bool)
    for b, layout in enumerate(layouts):
        if layout.text.stop > length:
            raise ValueError(f"text_positions: sample {b} ({layout.length} tokens) is longer than {length}")
        mask[b, layout.text.start : layout.text.stop] = True
    return mask


def text_hidden_mse(student_hidden: Sequence[torch.Tensor], teacher_hidden: Sequence[torch.Tensor],
                    layouts: Sequence[Layout], layers: Sequence[int] | None = None) -> torch.Tensor:
    """MSE between student and teacher hidden states at the text positions, averaged
    over the chosen layers.

    `*_hidden` are what `output_hidden_states=True` returns: the embeddings first,
    then one `[B, L, D]` tensor per decoder layer (transformers puts the last one
    after the final norm). `layers` indexes the *decoder layers*, 0-based (layer i is
    `hidden[i + 1]`, negative indices count from the end); None = every layer. Each
    layer's term is the mean over text positions of the mean squared difference per
    position; the teacher is detached. No text position gives 0.
    """
    if len(student_hidden) != len(teacher_hidden):
        raise ValueError(f"text_hidden_mse: student has {len(student_hidden)} hidden states, "
                         f"teacher {len(teacher_hidden)}")
    n = len(student_hidden) - 1
    if n < 1:
        raise ValueError("text_hidden_mse: need the embeddings and at least one layer's hidden states")
    chosen = list(range(n)) if layers is None else list(layers)
    if not chosen:
        raise ValueError("text_hidden_mse: no layer chosen")
    for i in chosen:
        if not -n <= i < n:
            raise ValueError(f"text_hidden_mse: layer {i} out of range for {n} layers")
    first = student_hidden[1]
    if len(layouts) != first.shape[0]:
        raise ValueError(f"text_hidden_mse: {len(layouts)} layouts for a batch of {first.shape[0]}")
    mask = text_positions(layouts, first.shape[1])  # on the host: the check below needs no device sync
    if not mask.any():
        return first.sum() * 0.0
    weight = mask.to(first.device, torch.float32)
    terms = []
    for i in chosen:
        s, t = student_hidden[i % n + 1], teacher_hidden[i % n + 1]
        if s.shape != t.shape:
            raise ValueError(f"text_hidden_mse: layer {i}: student {tuple(s.shape)} vs teacher {tuple(t.shape)}")
        diff = s.float() - t.detach().float()
        terms.append((diff.pow(2).mean(-1) * weight).sum() / weight.sum())
    return torch.stack(terms).mean()


class DistillModule(VLMModule):
    """A VoCo student (mask `voco`, or `video` for clips) trained with next-token loss
    plus, per `objective`, distillation terms from a frozen `causal` teacher.

    `hidden_layers` picks the decoder layers of the `attention` term (0-based, None =
    all). The teacher comes from `teacher_from` (loaded when fitting starts) or
    `set_teacher`; it must share the student's vocabulary, image geometry and, for
    the `attention` term, LLM width and depth.
    """

    def __init__(self, cfg=None, preset: str = "nano", overrides: dict | None = None,
                 objective: str = "implicit", teacher_from: str | None = None, temperature: float | None = None,
                 kl_weight: float = 1.0, hidden_weight: float = 1.0, hidden_layers: list[int] | None = None,
                 mask: str = "voco", stage: str = "distill", steps: int | None = None, lr: float | None = None,
                 train_vision: bool | None = None, init_from: str | None = None, tokenizer=None):
        if objective not in OBJECTIVES:
            raise ValueError(f"objective {objective!r} is not one of {OBJECTIVES}")
        if mask not in STUDENT_MASKS:
            raise ValueError(f"distill: the student's mask must be one of {STUDENT_MASKS} (the teacher "
                             f"runs under 'causal'), got {mask!r}")
        if temperature is not None and not temperature > 0:
            raise ValueError(f"distill: temperature must be > 0, got {temperature}")
        if kl_weight < 0 or hidden_weight < 0:
            raise ValueError(f"distill: weights must be >= 0, got kl_weight={kl_weight}, "
                             f"hidden_weight={hidden_weight}")
        super().__init__(cfg, preset, overrides, mask=mask, stage=stage, steps=steps, lr=lr,
                         train_vision=train_vision, init_from=init_from, tokenizer=tokenizer)
        self.objective, self.teacher_from = objective, teacher_from
        # None: the config's `train.distill_temperature`
        self.temperature = float(self.cfg.train.distill_temperature if temperature is None else temperature)
        self.kl_weight = float(kl_weight)
        self.hidden_weight = float(hidden_weight)
        self.hidden_layers = None if hidden_layers is None else [int(i) for i in hidden_layers]
        if self.hidden_layers is not None:
            n = self.cfg.llm.layers
            bad = [i for i in self.hidden_layers if not -n <= i < n]
            if bad or not self.hidden_layers:
                raise ValueError(f"distill: hidden_layers {self.hidden_layers} must be non-empty indices of "
                                 f"the LLM's {n} layers")
        self._teacher: list[VoCoVLM] = []  # a plain list: never a submodule, parameter or state_dict entry
        self.answers = AnswerLogits()
        self.save_hyperparameters({**dict(self.hparams), "objective": objective, "teacher_from": teacher_from,
                                   "temperature": self.temperature, "kl_weight": self.kl_weight,
                                   "hidden_weight": self.hidden_weight, "hidden_layers": self.hidden_layers})

    # -- the teacher ------------------------------------------------------------------------
    @property
    def uses_logits(self) -> bool:
        return "logits" in self.objective

    @property
    def uses_hidden(self) -> bool:
        return "attention" in self.objective

    @property
    def needs_teacher(self) -> bool:
        return self.objective != "implicit"

    @property
    def teacher(self) -> VoCoVLM | None:
        return self._teacher[0] if self._teacher else None

    def set_teacher(self, teacher: VoCoVLM | VLMModule) -> "DistillModule":
        """Use `teacher` (a `VoCoVLM`, or a `VLMModule` whose model is taken), frozen and
        in eval mode; it is not copied, only frozen."""
        if isinstance(teacher, VLMModule):
            teacher = teacher.model
        if not isinstance(teacher, VoCoVLM):
            raise ValueError(f"set_teacher: expected a VoCoVLM or VLMModule, got {type(teacher).__name__}")
        if teacher is self.model:
            raise ValueError("set_teacher: the teacher must be a separate (frozen) model, not the student")
        self._check_teacher(teacher)
        teacher.eval().requires_grad_(False)
        self._teacher[:] = [teacher]
        self.answers = AnswerLogits()  # what this teacher said about each training item, with train.teacher_cache
        return self

    def _check_teacher(self, teacher: VoCoVLM) -> None:
        s, t = self.model.cfg, teacher.cfg
        problems = []
        if teacher.vocab_size != self.model.vocab_size:
            problems.append(f"vocabulary {teacher.vocab_size} vs {self.model.vocab_size}")
        if (t.data.image_size, t.data.patch_size) != (s.data.image_size, s.data.patch_size):
            problems.append(f"image geometry {t.data.image_size}/{t.data.patch_size} vs "
                            f"{s.data.image_size}/{s.data.patch_size}")
        slots_t, slots_s = (getattr(c, "image_slots", c.data.image_tokens) for c in (t, s))  # K with a compressor
        if slots_t != slots_s:
            problems.append(f"{slots_t} vs {slots_s} sequence slots per image (the teacher must read the "
                            f"student's batches: same sequences, VoCo slots included)")
        if self.uses_hidden and (t.llm.hidden_size, t.llm.layers) != (s.llm.hidden_size, s.llm.layers):
            problems.append(f"LLM width x depth {t.llm.hidden_size}x{t.llm.layers} vs "
                            f"{s.llm.hidden_size}x{s.llm.layers} (the attention objective pairs layers)")
        if problems:
            raise ValueError("distill: the teacher does not fit the student: " + "; ".join(problems))

    def _require_teacher(self) -> VoCoVLM:
        """The teacher on the student's device, loading `teacher_from` the first time."""
        if self.teacher is None:
            if not self.teacher_from:
                raise ValueError(f"distill: objective {self.objective!r} needs a teacher: set teacher_from "
                                 f"to an upper-bound (causal) checkpoint or call set_teacher(vlm)")
            from vocolab.training.loading import load_model

            self.set_teacher(load_model(self.teacher_from))
        teacher = self.teacher
        device = model_device(self.model)
        if model_device(teacher) != device:
            teacher.to(device)
        return teacher

    def on_fit_start(self) -> None:
        if self.needs_teacher:
            teacher = self._require_teacher()
            student_frozen = not any(p.requires_grad for p in self.model.vision.parameters())
            if student_frozen and getattr(self.trainer, "datamodule", None) is not None:
                mine, theirs = self.model.vision.state_dict(), teacher.vision.state_dict()
                if any(not torch.equal(mine[k], theirs[k].to(mine[k].device)) for k in mine):
                    raise ValueError("distill: the teacher's vision tower differs from the student's, but both "
                                     "would read the student's cached frozen CLIP features; use a teacher "
                                     "from the same recipe (same CLIP) or train_vision=True")
        super().on_fit_start()

    def teacher_forward(self, batch: Batch, output_hidden_states: bool = False):
        """The frozen teacher on `batch` under the `causal` mask, without autograd."""
        teacher = self._require_teacher()
        with torch.no_grad():
            return teacher(batch.input_ids, batch.layouts, pixels=batch.pixels, features=batch.features,
                           mask="causal", output_hidden_states=output_hidden_states)

    # -- training ---------------------------------------------------------------------------
    def distill_losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        """`ce` (next-token loss under the student's mask), `kl` / `hidden` when the
        objective has them (unweighted), and `loss` = ce + kl_weight*kl + hidden_weight*hidden."""
        hidden = self.uses_hidden
        out = self.model(batch.input_ids, batch.layouts, pixels=batch.pixels, features=batch.features,
                         mask=self.mask, labels=batch.labels, output_hidden_states=hidden)
        losses = {"ce": self.global_token_mean(out.loss, batch.labels)}
        total = losses["ce"]
        if self.needs_teacher:
            kept = self.cfg.train.teacher_cache and not hidden  # answer logits alone can be kept per item
            ref = None if kept else self.teacher_forward(batch, output_hidden_states=hidden)
            if self.uses_logits:
                if kept:
                    teacher = self.answers.logits(batch, lambda part: self.teacher_forward(part).logits)
                else:
                    teacher = ref.logits
                losses["kl"] = answer_kl(out.logits, teacher, batch.labels, self.temperature)
                total = total + self.kl_weight * losses["kl"]
            if hidden:
                losses["hidden"] = text_hidden_mse(out.hidden_states, ref.hidden_states, batch.layouts,
                                                   self.hidden_layers)
                total = total + self.hidden_weight * losses["hidden"]
        losses["loss"] = total
        return losses

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        losses = self.distill_losses(batch)
        for name, value in losses.items():
            self.log(f"train/{name}", value, prog_bar=name == "loss", batch_size=len(batch), sync_dist=self.distributed)
        return losses["loss"]


__all__ = ["DistillModule", "OBJECTIVES", "STUDENT_MASKS", "answer_kl", "text_hidden_mse", "text_positions"]
