"""Typed configuration for every vocolab run.

One nested dataclass tree (`Config`) describes data, vision tower, LLM, VoCo settings and training.
Presets (`nano`, `small`, `base`: `core.presets`) are plain functions returning a `Config`; overrides are validated so
that a typo or a wrong type fails loudly with the offending field's dotted name instead of being
silently ignored, and a config survives a JSON round trip unchanged (it is stored beside every
checkpoint and results file).

This module is a leaf (it imports nothing of vocolab: validating is cheap, no import cycles). It checks
each field on its own terms (ranges, divisibility, known modes and backends); checks that need the word
list or the compression zoo run where those are built (`data.vocab.check_data_config`,
`zoo.registry.check_compressor_config`, both gathered in `studies.common.study_config`).
"""

from __future__ import annotations

import json
import os
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

MASK_MODES = ("causal", "voco", "video")
ATTN_BACKENDS = ("sdpa", "eager", "flex_attention", "sdpa_frames")

# how the VoCo model learns from the upper bound (`vocolab.training.distill`)
VOCO_OBJECTIVES = ("implicit", "logits", "attention", "logits+attention")


@dataclass
class DataConfig:
    """Procedural scenes and clips; difficulty knobs live here."""

    image_size: int = 64
    patch_size: int = 8
    grid: int = 4  # objects sit on a grid x grid lattice of cells
    min_objects: int = 3
    max_objects: int = 6
    shapes: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross")
    colors: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "cyan", "white")
    sizes: tuple[str, ...] = ("small", "large")
    frames: int = 4  # frames per clip
    # 40k training scenes: at 4k nano's upper bound overfit before it bound colours to shapes (train loss
    # 0.005, validation 0.65); generation is cheap (render storage: ~0.5 ms a scene)
    train_scenes: int = 40_000
    heldout_scenes: int = 500
    train_clips: int = 2000
    heldout_clips: int = 300
    val_scenes: int = 300  # a validation split of its own (another seed): stopping rules, model selection
    val_clips: int = 150
    questions_per_scene: int = 5
    # > 0: questions per training scene/clip (held-out ones keep `questions_per_scene`), more answers per image
    train_questions_per_scene: int = 0
    # how captions name positions: "coarse" (a 3x3 grid of words) or "exact" (the lattice row and column);
    # captions are training text only, the held-out questions never change
    captions: str = "exact"
    # training scenes only: extra question families ("row"/"column": where a named object is; "spatial": one more
    # relation; "axis": do two share a row or a column), a random offset of every object of up to `train_jitter`
    # cells when drawn (clip objects sit between cells), and fewer-object scenes
    train_extra_families: tuple[str, ...] = ("row", "column", "spatial")
    train_jitter: float = 0.0
    # the share of training scenes drawn as one frame of a fresh clip instead: objects on the clip's finer lattice
    # (between cells, one cell apart), the positions clip frames hold, asked the scene families
    train_clip_frames: float = 0.0
    train_min_objects: int = 0  # > 0: training scenes and clips hold train_min_objects..max_objects objects
    # the training split's pixels: "arrays" (stored in the cached dataset) or "render" (drawn again from each
    # row's seed when read: the same pixels); validation and held-out keep theirs
    storage: str = "render"
    train_seed: int = 0
    heldout_seed: int = 10_007  # a different seed: held-out scenes never appear in training
    val_seed: int = 20_011

    @property
    def patches_per_side(self) -> int:
        return self.image_size // self.patch_size

    @property
    def image_tokens(self) -> int:
        """V: patch tokens per image (CLS excluded)."""
        return self.patches_per_side**2


@dataclass
class VisionConfig:
    """Mini CLIP towers (vision and, for the contrastive stage, text)."""

    hidden_size: int = 64
    layers: int = 2
    heads: int = 4
    intermediate_size: int = 256
    text_hidden_size: int = 64
    text_layers: int = 2
    projection_dim: int = 64
    feature_layer: int = -2  # penultimate layer, as LLaVA and VoCo-LLaMA


@dataclass
class LLMConfig:
    """Mini LLaMA built from a `LlamaConfig`."""

    hidden_size: int = 128
    layers: int = 4
    heads: int = 4
    kv_heads: int = 4
    intermediate_size: int = 384
    max_positions: int = 512
    rope_theta: float = 10_000.0
    # std of the LLM's initial weights (LlamaConfig.initializer_range): ~1/sqrt(hidden), not Llama's 0.02; at
    # width 128 it shortened the plateau before the model reads the image (nano held-out 0.34 -> 0.44, same steps)
    init_std: float = 0.08
    # a learned embedding per patch position added to the projected image tokens (`models.projector`): rotary
    # positions reach queries and keys, never the values. Nano validation 0.699 -> 0.872, spatial 0.33 -> 0.50
    image_positions: bool = True
    # its start: "sincos", the 2-D sine-cosine code of the patch's row and column (RMS init_std), so
    # "where" is in the values from the first step (nano held-out 0.925 / 0.976 at seeds 0 / 1), or "zeros"
    image_positions_init: str = "sincos"
    frame_positions_rms: float = 0.32  # frame embeddings' start: `sincos_frames` at this RMS, the tokens' (0: zeros)
    # or "eager", "flex_attention" (GPU), "sdpa_frames": SDPA over the `video` mask's non-empty blocks only
    # (`models.frame_attention`: the same numbers, a temporal training step on the CPU cheaper)
    attn_implementation: str = "sdpa"


@dataclass
class VoCoConfig:
    """How the image is compressed: K VoCo tokens and the mask mode."""

    tokens: int = 1  # K
    mask: str = "voco"
    # a learned embedding per VoCo slot (added to the one `<voco>` token embedding): the K tokens of an image
    # differ from the start, not only by their positions
    distinct: bool = True


@dataclass
class CompressConfig:
    """A compressor from the zoo (`vocolab.zoo`) that maps each image's V patch features to
    K tokens *before* the LLM. "none": every patch token enters the LLM (VoCo, which
    compresses inside the LLM, is configured under `voco`)."""

    method: str = "none"
    tokens: int = 1  # K tokens per image (frame) that take the image's place in the sequence


@dataclass
class TrainConfig:
    """Optimisation settings; the recipe of every stage lives here so that it is
    recorded with each checkpoint and results file."""

    batch_size: int = 32
    # 1e-3, global gradient norm clipped at 1: at nano 2e-3 unclipped left colour and shape unbound (0.446; RESULTS.md)
    lr: float = 1e-3
    positions_lr_scale: float = 1.0  # the per-patch image positions' lr: this times `lr`
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # max global gradient norm (0: no clipping)
    warmup_frac: float = 0.03
    steps: int = 1000  # default for a stage run on its own
    clip_steps: int = 150  # with `clip_target`: the cap
    clip_batch_size: int = 64
    clip_target: float = 0.0  # > 0: clip ends once validation retrieval (every `clip_check_every` steps) passes it
    clip_check_every: int = 50
    pretrain_steps: int = 400
    instruct_steps: int = 2200  # nano binds colour and shape to objects after ~600-2,000 steps
    # while under this validation accuracy (a slow seed on its plateau) the upper stage goes on for `instruct_retry`
    # x its steps (0: never), `instruct_retries` cycles at most; seed 2: 0.87 -> 0.95, `spatial` 0.42 -> 0.76
    instruct_retry_below: float = 0.90
    instruct_retry: float = 0.75
    instruct_retries: int = 2
    voco_steps: int = 2100  # at nano, VoCo at K=1 was under-trained at 700 (validation 0.58 -> 0.74 at 2100)
    # validation retention (lower -> upper bound) under which voco goes on for `voco_retry` x its steps (0: never),
    # `voco_retries` cycles at most (`voco-retry`, `voco-retry2`)
    voco_retry_below: float = 0.80
    voco_retry: float = 1.0
    voco_retries: int = 2
    # the voco stage's objective (`training.distill`): KL to the frozen upper bound's answer logits plus
    # MSE to its text hidden states; at seed 0, validation 0.779 against 0.727 for "attention" (RESULTS.md)
    voco_objective: str = "logits+attention"
    train_vision: bool = False  # CLIP frozen (features cached) after the clip stage
    turns: bool = True  # all questions of an image in one training sequence
    # True: a frozen teacher's answer logits (the `logits` objective) computed once per training item and read
    # back in later epochs (`training.teacher_cache`)
    teacher_cache: bool = False
    # > 0: the weights a stage ends with (and that validation reads) are an exponential moving average of the
    # trajectory with this decay per optimiser step (Lightning's `EMAWeightAveraging`); 0: the last step's (the
    # temporal cell, still learning at its end, kept 0.792 on validation at 0.998 against 0.813; RESULTS.md)
    ema_decay: float = 0.0
    # the temperature T of the `logits` objective's KL (both answer distributions softened by T, the KL times T^2)
    distill_temperature: float = 2.0
    precision: str = "auto"  # "auto": bf16-mixed on GPU, 32 on CPU
    # data parallelism through Lightning: `batch_size` stays the global batch, split over the
    # devices; strategy "auto" is DDP when devices > 1
    devices: int = 1
    strategy: str = "auto"


# Fields added after trained models were cached under keys of `Config.to_dict()`: left out of it at their
# default, so those keys (and every cached model, cell and shipped config) stay valid; set, they are in it.
LEFT_OUT_AT_DEFAULT: dict[str, dict[str, Any]] = {"data": {"train_clip_frames": 0.0},
                                                  "train": {"teacher_cache": False, "ema_decay": 0.0,
                                                            "distill_temperature": 2.0}}


@dataclass
class Config:
    preset: str = "nano"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    vision: VisionConfig = field(default_factory=VisionConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    voco: VoCoConfig = field(default_factory=VoCoConfig)
    compress: CompressConfig = field(default_factory=CompressConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        validate(self)

    @property
    def image_slots(self) -> int:
        """Tokens each image (frame) occupies in the LLM's sequence: V, or K with a compressor."""
        return self.data.image_tokens if self.compress.method == "none" else self.compress.tokens

    # -- overrides and serialisation -------------------------------------------------
    def override(self, **overrides: Any) -> "Config":
        """A copy with dotted-key overrides applied, e.g. `override(**{"voco.tokens": 4})`."""
        tree = asdict(self)
        for key, value in overrides.items():
            _set_dotted(tree, key, value)
        return Config.from_dict(tree)

    def to_dict(self) -> dict[str, Any]:
        """Every field, save those of `LEFT_OUT_AT_DEFAULT` at their default: what keys and saved configs hold."""
        tree = asdict(self)
        for section, later in LEFT_OUT_AT_DEFAULT.items():
            for name, default in later.items():
                if tree[section][name] == default:
                    del tree[section][name]
        return tree

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_dict(cls, tree: dict[str, Any]) -> "Config":
        return _build(cls, tree, prefix="")

    @classmethod
    def from_json(cls, path_or_text: str | os.PathLike) -> "Config":
        text = str(path_or_text)
        if not text.lstrip().startswith("{"):
            try:
                text = Path(path_or_text).read_text()
            except OSError as err:
                raise ValueError(f"cannot read config file {path_or_text}: {err}") from err
        try:
            tree = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"config is not valid JSON: {err}") from err
        return cls.from_dict(tree)


def validate(cfg: Config) -> None:
    """Cross-field checks; each failure is a ValueError naming the field."""
    d, v, llm = cfg.data, cfg.vision, cfg.llm
    if d.image_size % d.patch_size:
        raise ValueError(f"data.image_size: {d.image_size} is not divisible by data.patch_size={d.patch_size}")
    if d.grid < 2 or d.image_size // d.grid < 8:
        raise ValueError(f"data.grid: {d.grid} cells per side leave under 8 px per cell at image_size {d.image_size}")
    if not 1 <= d.min_objects <= d.max_objects:
        raise ValueError(f"data.min_objects: need 1 <= min_objects ({d.min_objects}) <= max_objects ({d.max_objects})")
    if d.max_objects > d.grid**2:
        raise ValueError(f"data.max_objects: {d.max_objects} objects do not fit on a {d.grid}x{d.grid} grid")
    if d.frames < 2:
        raise ValueError(f"data.frames: clips need at least 2 frames, got {d.frames}")
    if len(set(d.shapes)) < 2 or len(set(d.colors)) < 2:
        raise ValueError("data.shapes/data.colors: need at least two distinct shapes and colours")
    if d.captions not in ("coarse", "exact"):
        raise ValueError(f"data.captions: {d.captions!r} is not 'coarse' or 'exact'")
    if d.storage not in ("arrays", "render"):
        raise ValueError(f"data.storage: {d.storage!r} is not 'arrays' or 'render'")
    if d.train_min_objects and not 1 <= d.train_min_objects <= d.max_objects:
        raise ValueError(f"data.train_min_objects: {d.train_min_objects}; need 0 (off) or 1..max_objects")
    if not 0 <= d.train_jitter < 0.5:
        raise ValueError(f"data.train_jitter: {d.train_jitter} cells; need 0 <= jitter < 0.5 (objects stay in cell)")
    if not 0 <= d.train_clip_frames <= 1:
        raise ValueError(f"data.train_clip_frames: {d.train_clip_frames}; need a share of training scenes in 0..1")
    if llm.image_positions_init not in ("zeros", "sincos"):
        raise ValueError(f"llm.image_positions_init: {llm.image_positions_init!r} is not 'zeros' or 'sincos'")
    if llm.frame_positions_rms < 0:
        raise ValueError(f"llm.frame_positions_rms: {llm.frame_positions_rms}; need >= 0 (0: a zero start)")
    if cfg.voco.tokens < 0 or cfg.voco.tokens > d.image_tokens:
        raise ValueError(f"voco.tokens: {cfg.voco.tokens} VoCo tokens for {d.image_tokens} image tokens; "
                         f"need 0 <= tokens <= image tokens")
    if cfg.voco.mask not in MASK_MODES:
        raise ValueError(f"voco.mask: {cfg.voco.mask!r} is not one of {MASK_MODES}")
    if cfg.compress.method != "none" and not 1 <= cfg.compress.tokens <= d.image_tokens:
        raise ValueError(f"compress.tokens: {cfg.compress.tokens} tokens for {d.image_tokens} "
                         f"patch tokens; need 1 <= tokens <= image tokens")
    check_backend(llm.attn_implementation, "llm.attn_implementation")
    for name, hidden, heads in (("vision", v.hidden_size, v.heads), ("llm", llm.hidden_size, llm.heads)):
        if hidden % heads:
            raise ValueError(f"{name}.hidden_size: {hidden} is not divisible by {name}.heads={heads}")
    if llm.heads % llm.kv_heads:
        raise ValueError(f"llm.kv_heads: heads {llm.heads} is not a multiple of kv_heads {llm.kv_heads}")
    t = cfg.train
    if t.batch_size < 1 or t.clip_batch_size < 1 or t.lr <= 0 or t.positions_lr_scale <= 0:
        raise ValueError("train.batch_size/lr/positions_lr_scale: batch sizes >= 1, lr and its scale > 0 are required")
    for name in ("steps", "clip_steps", "pretrain_steps", "instruct_steps", "voco_steps", "instruct_retries",
                 "voco_retries"):
        if getattr(t, name) < 0:
            raise ValueError(f"train.{name}: must be >= 0, got {getattr(t, name)}")
    if t.devices < 1 or t.batch_size % t.devices or t.clip_batch_size % t.devices:
        raise ValueError(f"train.devices: {t.devices} devices must be >= 1 and divide the global batches "
                         f"(train.batch_size {t.batch_size}, train.clip_batch_size {t.clip_batch_size})")
    if not 0 <= t.clip_target <= 1 or t.clip_check_every < 1:
        raise ValueError(f"train.clip_target/clip_check_every: need 0..1, >= 1: {t.clip_target}, {t.clip_check_every}")
    for stage in ("instruct", "voco"):
        if not 0 <= getattr(t, f"{stage}_retry_below") <= 1 or getattr(t, f"{stage}_retry") < 0:
            raise ValueError(f"train.{stage}_retry_below/{stage}_retry: need a figure in 0..1 and a fraction >= 0")
    if not t.distill_temperature > 0:
        raise ValueError(f"train.distill_temperature: {t.distill_temperature}; need > 0")
    if not 0 <= t.ema_decay < 1:
        raise ValueError(f"train.ema_decay: {t.ema_decay}; need 0 (off) <= decay < 1")
    if t.voco_objective not in VOCO_OBJECTIVES:
        raise ValueError(f"train.voco_objective: {t.voco_objective!r} is not one of {VOCO_OBJECTIVES}")


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    node = tree
    parts = key.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            raise ValueError(f"{key}: unknown config field {'.'.join(parts[: i + 1])!r}")
        if i == len(parts) - 1:
            node[part] = value
        else:
            node = node[part]


def _build(cls: type, tree: Any, prefix: str) -> Any:
    if not isinstance(tree, dict):
        raise ValueError(f"{prefix or 'config'}: expected a mapping, got {type(tree).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(tree) - set(known))
    if unknown:
        raise ValueError(f"{prefix}{unknown[0]}: unknown config field")
    hints = typing.get_type_hints(cls)
    return cls(**{name: _coerce(hints[name], value, f"{prefix}{name}") for name, value in tree.items()})


def _coerce(hint: Any, value: Any, name: str) -> Any:
    if is_dataclass(hint):
        return _build(hint, value, prefix=f"{name}.")
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or not all(isinstance(x, str) for x in value):
            raise ValueError(f"{name}: expected a list of strings, got {value!r}")
        return tuple(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and (not isinstance(value, hint) or (hint is int and isinstance(value, bool))):
        raise ValueError(f"{name}: expected {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


def check_backend(name: str, who: str | None = None) -> str:
    """Return `name` if the attention backend honours custom masks (`ATTN_BACKENDS`), else
    raise ValueError prefixed `who: `: flash-attention and friends would silently train an
    unmasked model. The one check the config, the masks and the model all use."""
    if name not in ATTN_BACKENDS:
        prefix = f"{who}: " if who else ""
        raise ValueError(
            f"{prefix}attention backend {name!r} would ignore vocolab's custom attention mask; "
            f"use one of {ATTN_BACKENDS} (flex_attention needs a GPU)")
    return name


__all__ = ["ATTN_BACKENDS", "CompressConfig", "Config", "DataConfig", "LLMConfig", "MASK_MODES", "TrainConfig",
           "VOCO_OBJECTIVES", "VisionConfig", "VoCoConfig", "check_backend", "validate"]
