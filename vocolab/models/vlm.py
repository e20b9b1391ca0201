"""VoCoVLM: CLIP vision tower -> MLP projector -> LLaMA, with layout-driven attention masks.

The model itself is deliberately plain (LLaVA-style): image patch features replace
the placeholder image tokens in the embedded sequence, and everything that makes it
VoCo-LLaMA lives in the *mask* (`core.masks`) and the per-sample `Layout`s. The
model's only extra duties are the ones the official code got wrong:

* the mask is converted for the attention backend actually running
  (`masks.for_backend`), and backends that would ignore it are refused;
* position ids are passed explicitly (`arange` over each sample), because this
  transformers version ignores `cache_position`;
* image features are matched to image slots *per sample*, so text-only samples can
  sit in the same batch as image and video samples.

These checks and the preparation of the LLM's inputs live in `models.inputs.prepare`, which
the wrappers that run the decoder layers one by one (FastV, MoD) share.

Where tensors go: inputs may arrive on any device; token ids, pixels or features, the
mask, the positions and the labels are moved to the model's device here (`embed`,
`prepare`, `forward`), the one place that does it, so no caller moves them.

Image inputs (`pixels` or precomputed `features`) for `embed`/`forward` come in one
of three forms; each sample's entry is one image or a stack of T frames:

* a tensor with leading dim B (one entry per sample). Entries of samples without
  image tokens are placeholders and are ignored (not even encoded);
* a tensor whose leading dim equals the number of samples *with* image tokens:
  entries are assigned, in order, to those samples only;
* a list of length B whose entries are a tensor or None (None = text-only sample).

pixels entries: uint8 `[H, W, 3]` / `[T, H, W, 3]` or normalised float `[3, H, W]` /
`[T, 3, H, W]`; features entries: `[V, Dv]` / `[T, V, Dv]` (CLIP patch features, the
LLaVA-style cache). A sample's image tokens must number exactly T x V, else ValueError.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPModel, CLIPVisionModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from vocolab.core.config import Config, check_backend
from vocolab.core.layout import Layout, SpecialIds
from vocolab.models.frame_deltas import FrameDeltas
from vocolab.models.inputs import model_device, prepare
from vocolab.models.llm import build_llm
from vocolab.models.projector import Projector, sincos_2d, sincos_frames
from vocolab.models.vision import patch_features, pixels_to_tensor, vision_config
from vocolab.zoo.registry import build_compressor, check_compressor_config, method_info


class VoCoVLM(nn.Module):
    """Vision tower (`.vision`), projector (`.projector`) and causal LM (`.llm`)."""

    def __init__(self, cfg: Config, special: SpecialIds, vocab_size: int):
        super().__init__()
        check_backend(cfg.llm.attn_implementation)
        self.cfg, self.special, self.vocab_size = cfg, special, vocab_size
        self.vision = CLIPVisionModel(vision_config(cfg))
        # a per-patch position embedding only where the LLM's image tokens are patches: all V
        # (no compressor) or K kept unchanged (a token drop: each gets its patch's position)
        sees_patches = cfg.compress.method == "none" or method_info(cfg.compress.method).keeps_patches
        positions = cfg.data.image_tokens if cfg.llm.image_positions and sees_patches else 0
        start = None
        if positions and cfg.llm.image_positions_init == "sincos":
            start = sincos_2d(cfg.data.patches_per_side, cfg.llm.hidden_size, cfg.llm.init_std)
        self.projector = Projector(cfg.vision.hidden_size, cfg.llm.hidden_size, positions, start)
        self.llm = build_llm(cfg, vocab_size, special)
        # distinct VoCo slots: one learned embedding per slot position within a frame's VoCo span
        self.voco_slots = None
        if cfg.voco.distinct:
            self.voco_slots = nn.Parameter(torch.randn(cfg.data.image_tokens, cfg.llm.hidden_size) * cfg.llm.init_std)
        # a learned embedding per frame of a clip after the first, added to all of that frame's
        # image tokens and starting at a sine-cosine code of the frame index: rotary positions
        # never reach the values, so without it a question gathers *what* and *where* from a clip
        # but not *when*. Frame 0 and a lone image get none, so an image model, and the training
        # of one (which freezes them), is untouched by it
        self.frame_positions = nn.Parameter(sincos_frames(cfg.data.frames, cfg.llm.hidden_size,
                                                          cfg.llm.frame_positions_rms))
        # each clip frame's image tokens also carry how their features changed since the frame before
        self.frame_deltas = FrameDeltas(cfg.vision.hidden_size, cfg.llm.hidden_size)
        self._first_frame, self._previous = 0, None  # set by `from_frame`
        # a zoo compressor maps each image's V patch features to K tokens before the projector
        self.compressor = None
        if cfg.compress.method != "none":
            check_compressor_config(cfg)
            self.compressor = build_compressor(cfg.compress.method, cfg, cfg.compress.tokens)

    @property
    def image_slots(self) -> int:
        """Tokens one image (frame) occupies in the sequence: V, or K with a compressor."""
        return self.cfg.image_slots

    @property
    def vision_layers(self) -> int | tuple[int, ...]:
        """The CLIP hidden states the image features are read from (a compressor may ask for several)."""
        layers = getattr(self.compressor, "vision_layers", None)
        return self.cfg.vision.feature_layer if layers is None else tuple(layers)

    def load_backbone(self, state: dict) -> None:
        """Load a model without a compressor (e.g. the upper bound) into this one: every
        weight but the compressor's, which keeps its fresh initialisation. The source's
        per-patch image positions are left out where this model has none: the K tokens of a
        compressor that is not a token drop are not patches. A source saved before frame deltas
        existed leaves them at their zero start."""
        missing, unexpected = self.load_state_dict(state, strict=False)
        wrong = [k for k in missing if not k.startswith(("compressor.", "frame_deltas."))]
        wrong += [k for k in unexpected if not (k == "projector.positions" and self.projector.positions is None)]
        if wrong:
            raise ValueError(f"load_backbone: weights do not match this model: {wrong[:4]}")

    # -- backend ------------------------------------------------------------------------
    @property
    def attn_implementation(self) -> str:
        """The backend transformers will actually dispatch on (read from the LLM's config,
        so a change made behind our back, e.g. `vlm.llm.set_attn_implementation`, is seen)."""
        return self.llm.config._attn_implementation

    def set_attn_implementation(self, name: str) -> None:
        """Switch the LLM's attention backend; refuses backends that ignore custom masks."""
        check_backend(name)
        self.llm.set_attn_implementation(name)
        self.cfg = self.cfg.override(**{"llm.attn_implementation": name})

    # -- vision ---------------------------------------------------------------------------
    def load_vision_from_clip(self, clip: CLIPModel | CLIPVisionModel) -> None:
        """Copy a (contrastively trained) CLIP vision tower into `.vision`."""
        source = clip.vision_model if isinstance(clip, CLIPModel) else clip
        if not isinstance(source, CLIPVisionModel):
            raise ValueError(f"load_vision_from_clip: expected a CLIPModel or CLIPVisionModel, "
                             f"got {type(clip).__name__}")
        try:
            self.vision.load_state_dict(source.state_dict())
        except RuntimeError as err:
            raise ValueError(f"load_vision_from_clip: the CLIP vision tower was built from a "
                             f"different vision config: {err}") from err

    def encode_images(self, pixels) -> torch.Tensor:
        """CLIP patch features `[..., V, Dv]` of uint8 `[..., H, W, 3]` or float `[..., 3, H, W]`.

        Runs without autograd when no vision parameter is trainable (frozen CLIP), which
        saves the activations a frozen tower would otherwise keep.
        """
        x = torch.from_numpy(np.ascontiguousarray(pixels)) if isinstance(pixels, np.ndarray) else pixels
        if x.dtype == torch.uint8:
            x = pixels_to_tensor(x)
        elif not x.is_floating_point() or x.dim() < 3 or x.shape[-3] != 3:
            raise ValueError(f"encode_images: expected uint8 [..., H, W, 3] or float [..., 3, H, W], "
                             f"got {x.dtype} {tuple(x.shape)}")
        lead = x.shape[:-3]
        grad = torch.is_grad_enabled() and any(p.requires_grad for p in self.vision.parameters())
        with torch.set_grad_enabled(grad):
            feats = patch_features(self.vision, x.reshape(-1, *x.shape[-3:]), self.vision_layers)
        return feats.reshape(*lead, *feats.shape[-2:])

    # -- embedding ------------------------------------------------------------------------
    def embed(self, input_ids: torch.Tensor, pixels=None, features=None, layouts=None) -> torch.Tensor:
        """`[B, L, D]` token embeddings with each sample's image slots (`special.image`)
        replaced, in order, by its projected patch features (compressed to K tokens per
        frame first when the model has a compressor). See the module docstring for the
        accepted forms of `pixels` / `features`; query-conditioned compressors read each
        sample's question from `layouts`."""
        if pixels is not None and features is not None:
            raise ValueError("embed: give pixels or features, not both")
        if layouts is not None and len(layouts) == len(input_ids):  # read on the host: no device sync
            counts = [sum(f.image.length for f in layout.frames) for layout in layouts]
        else:
            counts = (input_ids == self.special.image).sum(dim=1).tolist()
        input_ids = input_ids.to(model_device(self))  # the one place token ids follow the model
        embeds = self.llm.get_input_embeddings()(input_ids)
        if self.voco_slots is not None:
            embeds = embeds + self._slot_embeddings(input_ids)
        slots = input_ids == self.special.image
        need = [b for b, n in enumerate(counts) if n]
        source, what = (features, "features") if features is not None else (pixels, "pixels")
        if not need:
            if source is not None and _has_entries(source):
                raise ValueError(f"embed: {what} given but input_ids hold no image token "
                                 f"(id {self.special.image})")
            return embeds
        if source is None:
            raise ValueError(f"embed: samples {need} hold image tokens but neither pixels nor features "
                             f"were given")
        entries = _per_sample(source, len(counts), need, what)
        frames = [_frames(entries[b], what, b) for b in need]
        lead = 0  # streaming: the frame before leads each sample's frames, for its change, and is dropped
        if self._previous is not None:
            before = _per_sample(self._previous, len(counts), need, "previous features")
            lead = 1
        if what == "pixels":
            sizes = [f.shape[0] for f in frames]
            if len({f.dtype for f in frames}) > 1:
                raise ValueError("embed: mix of uint8 and float pixels in one batch")
            feats = list(self.encode_images(torch.cat([f.to(embeds.device) for f in frames])).split(sizes))
        else:
            feats = frames
        if lead:
            feats = [torch.cat([before[b].unsqueeze(0).to(f), f]) for b, f in zip(need, feats)]
        raw, kept = feats, None  # which patches a token drop kept: `[sum T, K]`
        if self.compressor is not None:
            feats, kept = self._compress(feats, need, embeds, layouts)
        d_vision = self.cfg.vision.hidden_size
        for b, f in zip(need, feats):
            if f.shape[-1] != d_vision:
                raise ValueError(f"embed: sample {b}: features have width {f.shape[-1]}, "
                                 f"the projector expects {d_vision}")
            if (f.shape[0] - lead) * f.shape[1] != counts[b]:
                raise ValueError(
                    f"embed: sample {b} has {counts[b]} image tokens but {what} give "
                    f"{f.shape[0] - lead} frame(s) x {f.shape[1]} patches = {(f.shape[0] - lead) * f.shape[1]}")
        proj_param = next(self.projector.parameters())
        stacked = torch.cat([f.to(device=proj_param.device, dtype=proj_param.dtype) for f in feats])
        sizes = [f.shape[0] for f in feats]
        projected = self._add_frame_positions(self.projector(stacked, kept), sizes, self._first_frame - lead)
        if max(sizes) > 1:  # clips only: a lone image has no change
            # all patches, a token drop's kept ones against the same patches, another compressor's K tokens
            changed = raw if self.compressor is None or kept is not None else feats
            projected = projected + self.frame_deltas(changed, kept).to(projected.dtype)
        if lead:
            projected = torch.cat([p[lead:] for p in projected.split(sizes)])
        rows = projected.reshape(-1, self.cfg.llm.hidden_size)  # [sum T, V or K, D] -> rows
        return embeds.masked_scatter(slots.unsqueeze(-1), rows.to(embeds.dtype))

    @contextmanager
    def from_frame(self, t: int, previous=None):
        """Within the block, each sample's image entry starts at frame `t` of its clip, and `previous`
        (CLIP features `[B, V, C]`, one entry per sample as for `features`) is frame t - 1's, which
        frame t's change is measured against: how streaming compression
        (`inference.compression.compress_frame`) feeds one frame at a time."""
        t = int(t)
        if (previous is None) != (t == 0):
            raise ValueError(f"from_frame: frame {t} needs {'the' if t else 'no'} previous frame's features "
                             f"(its change since that frame is part of its tokens)")
        self._first_frame, self._previous = t, previous
        try:
            yield self
        finally:
            self._first_frame, self._previous = 0, None

    def _add_frame_positions(self, projected: torch.Tensor, sizes: list[int], first: int = 0) -> torch.Tensor:
        """`projected` `[sum T, n, D]` plus, for frame t >= 1 of each entry of `sizes` frames (counted
        from `first`), frame t's embedding. Lone images and frame 0 are returned as they are."""
        frame = [first + t for size in sizes for t in range(size)]  # on the host: no device sync
        if max(frame) == 0:  # unused: an image stage freezes them (`VLMModule.setup`)
            return projected
        if max(frame) > self.frame_positions.shape[0]:
            raise ValueError(f"embed: frame {max(frame)} given; this model has frame positions for "
                             f"data.frames = {self.frame_positions.shape[0] + 1} frames")
        table = F.pad(self.frame_positions, (0, 0, 1, 0)).to(projected.dtype)  # row 0: frame 0, no embedding
        return projected + table[torch.tensor(frame, device=table.device)].unsqueeze(1)

    def _slot_embeddings(self, input_ids: torch.Tensor) -> torch.Tensor:
        """`[B, L, D]`: each VoCo token's slot embedding, zero elsewhere. A token's slot is
        its index within its run of consecutive VoCo tokens: a frame's VoCo span is one such
        run, so the ids alone give every frame the same slots, with or without layouts."""
        is_voco = input_ids == self.special.voco
        index = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        starts = is_voco & ~F.pad(is_voco[:, :-1], (1, 0), value=False)
        run_start = torch.where(starts, index, torch.zeros_like(index)).cummax(dim=1).values
        slot = ((index - run_start) * is_voco).clamp(max=self.voco_slots.shape[0] - 1)
        return self.voco_slots[slot] * is_voco[..., None].to(self.voco_slots.dtype)

    def _compress(self, feats: list[torch.Tensor], need: list[int], embeds: torch.Tensor, layouts):
        """Each sample's `[T, V, C]` features -> `[T, K, Dv]` through the compressor, and for a
        token drop which patches it kept (`[sum T, K]`, else None)."""
        sizes = [f.shape[0] for f in feats]
        param = next(self.projector.parameters())
        flat = torch.cat([f.to(device=param.device, dtype=param.dtype) for f in feats])
        if self.compressor.info.keeps_patches:  # a `zoo.dropping.PatchDrop`
            kept_feats, kept = self.compressor.keep(flat)
            return list(kept_feats.split(sizes)), kept
        query = None
        if self.compressor.info.needs_query:
            if layouts is None:
                raise ValueError(f"embed: compressor {self.compressor.info.name!r} reads the question; "
                                 f"pass layouts")
            rows = []
            for b in need:
                span = layouts[b].question
                if span.length == 0:
                    raise ValueError(f"embed: sample {b} has no question for the query-conditioned "
                                     f"compressor {self.compressor.info.name!r}")
                rows.append(embeds[b, span.start : span.stop].mean(0).expand(sizes[len(rows)], -1))
            query = torch.cat(rows).to(param.dtype)
        return list(self.compressor(flat, query=query).split(sizes)), None

    # -- forward --------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        layouts: Sequence[Layout] | None = None,
        pixels=None,
        features=None,
        mask: str | torch.Tensor = "voco",
        labels: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        past_key_values=None,
        position_ids: torch.Tensor | None = None,
        use_cache: bool = False,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> CausalLMOutputWithPast:
        """Masked causal-LM forward.

        `mask` is a mode from `MASK_MODES` (built from `layouts` over the whole
        sequence) or a prebuilt bool mask `[B, 1, Q, past + Q]` (True = may attend),
        as the VoCo cache needs. With a non-empty `past_key_values` both the mask and
        `position_ids` must be given explicitly: only the caller knows which original
        positions the cached keys came from.
        """
        call = prepare(self, "forward", input_ids=input_ids, layouts=layouts, pixels=pixels,
                       features=features, inputs_embeds=inputs_embeds, mask=mask,
                       past_key_values=past_key_values, position_ids=position_ids)
        return self.llm(
            inputs_embeds=call.inputs_embeds,
            attention_mask=call.attention_mask,
            position_ids=call.position_ids,
            labels=None if labels is None else labels.to(call.inputs_embeds.device),
            past_key_values=past_key_values,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            **({"frame_blocks": call.frame_blocks} if call.frame_blocks is not None else {}),
        )

    # -- bookkeeping ----------------------------------------------------------------------
    def parameter_report(self) -> dict:
        """Parameter counts per component and in total (tied weights counted once), plus
        the trainable counts under `"trainable"`."""
        parts = {"vision": self.vision, "projector": self.projector, "llm": self.llm, "total": self}
        if self.compressor is not None:
            parts["compressor"] = self.compressor
        params = {name: list(m.parameters()) for name, m in parts.items()}
        if self.voco_slots is not None:  # a parameter of the VLM itself, beside its components
            params["voco_slots"] = [self.voco_slots]
        params["frame_positions"] = [self.frame_positions]
        params["frame_deltas"] = list(self.frame_deltas.parameters())
        report = {name: sum(p.numel() for p in ps) for name, ps in params.items()}
        report["trainable"] = {name: sum(p.numel() for p in ps if p.requires_grad) for name, ps in params.items()}
        return report


# -- helpers for the accepted image-input forms ---------------------------------------------


def _has_entries(source) -> bool:
    if isinstance(source, (list, tuple)):
        return any(x is not None for x in source)
    return len(source) > 0


def _per_sample(source, batch: int, need: list[int], what: str) -> dict[int, torch.Tensor]:
    """Map each image-bearing sample to its entry (see the module docstring)."""
    if isinstance(source, (list, tuple)):
        if len(source) != batch:
            raise ValueError(f"embed: {what} list has {len(source)} entries for a batch of {batch}")
        for b, entry in enumerate(source):
            if (entry is None) != (b not in need):
                state = "no image tokens" if entry is not None else "image tokens"
                raise ValueError(f"embed: sample {b} has {state} but its {what} entry is "
                                 f"{'given' if entry is not None else 'None'}")
        return {b: _as_tensor(source[b]) for b in need}
    source = _as_tensor(source)
    if source.shape[0] == batch:
        return {b: source[b] for b in need}
    if source.shape[0] == len(need):
        return dict(zip(need, source))
    raise ValueError(f"embed: {what} have {source.shape[0]} entries; expected {batch} (one per sample) "
                     f"or {len(need)} (one per sample with image tokens)")


def _as_tensor(x) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x


def _frames(entry: torch.Tensor, what: str, b: int) -> torch.Tensor:
    """One sample's entry with a leading frame dim: one image becomes T = 1."""
    single = 2 if what == "features" else 3
    if entry.dim() == single:
        return entry.unsqueeze(0)
    if entry.dim() == single + 1:
        return entry
    raise ValueError(f"embed: sample {b}: {what} entry of shape {tuple(entry.shape)} is neither one "
                     f"image nor a stack of frames")


__all__ = ["VoCoVLM"]
