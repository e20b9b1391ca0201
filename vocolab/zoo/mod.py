"""VideoLLM-MoD (Wu et al. 2024, arXiv 2408.16730): mixture-of-depths for vision tokens.

Every vision token stays in the sequence, but in the chosen decoder layers ("MoD
layers") only the top `k = ceil(r * V)` vision tokens of each frame are computed; the
other `V - k` skip the layer unchanged (bit for bit) and write no K/V there. Text
(BOS, VoCo slots, question, answer, EOS) is always computed.

At a MoD layer, per sample and frame, the selected vision tokens are

* `learned`: the top k by a router score `s = router(h)` (`nn.Linear(d, 1)` per MoD
  layer, the only new parameters); the computed tokens get `h + w * (layer(h) - h)`
  with `w = sigmoid(s)`, so the router receives gradient through the gate (the
  top-k choice itself is not differentiable), as the paper's `x + mu * f(x)`;
* `random`: k random ones per frame (a seeded generator owned by the wrapper, so a
  run is reproducible from its seed; a new draw every forward), gate `w = 1`;
* `uniform`: k spatially even ones (the centre patch of each of k grid cells, the
  cells `avgpool`/`uniform` use, when they fit the patch grid; otherwise every
  (V/k)-th patch in raster order), gate `w = 1`.

The layer then runs on [every real non-vision token + the selected vision tokens]
only, with their ORIGINAL position ids (RoPE unchanged) and the causal mask
restricted to those rows and columns, like `zoo.fastv` (padding is dropped
and each sample re-packed); so a skipped token writes no K/V in that layer and
nothing attends to it there. Layer choice: `all`, `interleaved` (layers 1, 3, 5, ...,
the paper's best trade-off), `deep` (the second half), or explicit indices.

Costs (`mod_flops`, `kv_tokens_per_layer`): a MoD layer costs a plain layer at
`n_hat = n - frames * (V - k)` tokens (projections, MLP, attention n_hat x n_hat),
plus the router (`2 n d` FLOPs, scored at every position for simplicity, learned
only); the LM head runs at every position. `mod_flops(..., training=True)` gives
forward + backward as torch's `FlopCounterMode` counts them (linear layers 3x
forward: dX and dW; fused SDPA attention 3.5x: forward QK^T + AV, backward recomputes
QK^T plus four products), which `measured_training_flops` measures.

Caveats: only the causal (upper-bound) mask is supported (mask "voco"/"video" would
need the same restriction of a different mask; not wired up); no incremental
decoding with a cache (each MoD layer holds a different key set per layer, so
`use_cache=True` returns the per-layer cache only for inspection and sizing);
`greedy_generate` works (it reruns the whole sequence each step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache
from transformers.modeling_outputs import CausalLMOutputWithPast

from vocolab.core.layout import IGNORE_INDEX, Layout
from vocolab.models.inputs import gather, passthrough
from vocolab.models.layerwise import LayerwiseVLM
from vocolab.zoo.mod_config import MoDConfig, mod_layer_indices, selected_per_frame, uniform_offsets
from vocolab.zoo.mod_flops import mod_flops


@dataclass
class LayerRecord:
    """What one MoD layer did in the last forward (tensors on the model's device, detached).

    `index` `[B, n]`: original positions run through the layer (sorted; the first
    `count[b]` of row b are real, the rest filler); `selected` `[B, T, k]`: the selected
    vision positions per frame (rows with `frame_ok` False are filler); `weights`
    `[B, n]`: the gate of each computed slot (None unless learned); with tracing,
    `before` / `after` `[B, L, d]` hidden states around the layer.
    """

    layer: int
    index: torch.Tensor
    count: torch.Tensor
    selected: torch.Tensor
    frame_ok: torch.Tensor
    weights: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    before: torch.Tensor | None = None
    after: torch.Tensor | None = None

    def kept(self, b: int) -> list[int]:
        """Original positions of sample b computed here (= the K/V entries it writes)."""
        return self.index[b, : int(self.count[b])].tolist()

    def selected_of(self, b: int) -> list[int]:
        """Sample b's selected vision positions, sorted."""
        return sorted(self.selected[b][self.frame_ok[b]].flatten().tolist())


class MoDVLM(LayerwiseVLM):
    """A `VoCoVLM` whose LLM runs VideoLLM-MoD mixture-of-depths over vision tokens.

    Call it like `VoCoVLM.forward` (`input_ids, layouts, pixels=None, features=None,
    mask="causal", labels=None`, or `inputs_embeds=`); returns `.loss` / `.logits`
    (and `.past_key_values` with `use_cache=True`: a `DynamicCache` whose layer l holds
    the K/V of the tokens computed there). After each forward, `records` holds one
    `LayerRecord` per MoD layer; set `trace = True` to also keep each MoD layer's input
    and output hidden states. `routers[str(l)]` is layer l's router (learned only).
    """

    image_tokens = passthrough("image_slots", "The wrapped model's image slots (`cfg.image_slots`).")
    cache_reason = "each MoD layer keeps a different key set"

    def __init__(self, vlm, r: float = 0.2, layers: str | Sequence[int] = "interleaved",
                 selection: str = "learned", seed: int = 0, config: MoDConfig | None = None):
        super().__init__(vlm)
        config = config or MoDConfig(r=r, layers=layers, selection=selection, seed=seed)
        self.config = config
        n_layers = len(vlm.llm.model.layers)
        self.r = config.r
        self.selection = config.selection
        self.mod_layers = mod_layer_indices(n_layers, config.layers)
        self.k = selected_per_frame(config.r, vlm.cfg.image_slots)
        d = vlm.cfg.llm.hidden_size
        self.routers = nn.ModuleDict()
        if self.selection == "learned":
            param = next(vlm.llm.parameters())
            self.routers = nn.ModuleDict({str(i): nn.Linear(d, 1).to(device=param.device, dtype=param.dtype)
                                          for i in self.mod_layers})
        self.generator = torch.Generator().manual_seed(config.seed)
        self.records: list[LayerRecord] = []
        self.trace = False

    @classmethod
    def from_config(cls, vlm, config: MoDConfig) -> "MoDVLM":
        return cls(vlm, config=config)

    def reseed(self, seed: int | None = None) -> None:
        """Restart the random selection's generator (from `seed`, default the config's)."""
        self.generator.manual_seed(self.config.seed if seed is None else seed)

    def router_parameters(self) -> list[nn.Parameter]:
        return list(self.routers.parameters())

    # -- costs ---------------------------------------------------------------------------------
    def kv_tokens_per_layer(self, layout: Layout) -> list[int]:
        """K/V entries each decoder layer writes for one sample: every real token in a plain
        layer; in a MoD layer the non-vision tokens plus k per frame."""
        skipped = sum(max(0, f.image.length - self.k) for f in layout.frames)
        return [layout.length - skipped if i in self.mod_layers else layout.length
                for i in range(len(self.vlm.llm.model.layers))]

    def flops(self, seq_len: int, frames: int, *, training: bool = False) -> int:
        """`mod_flops` for this model (batch 1, no padding)."""
        return mod_flops(self.cfg, self.vocab_size, seq_len, frames, self.cfg.image_slots, self.k,
                         self.mod_layers, router=self.selection == "learned", training=training)

    # -- selection -----------------------------------------------------------------------------
    def _frame_positions(self, layouts: Sequence[Layout]) -> tuple[torch.Tensor, torch.Tensor, int]:
        """`[B, T, V]` vision positions per frame (filler 0), `[B, T]` which frames exist, V."""
        sizes = {f.image.length for l in layouts for f in l.frames if f.image.length}
        if len(sizes) > 1:
            raise ValueError(f"MoDVLM: frames with different vision token counts {sorted(sizes)} in one batch")
        v = sizes.pop() if sizes else 0
        if v and v != self.cfg.image_slots:
            raise ValueError(f"MoDVLM: frames hold {v} vision tokens but the model was built for "
                             f"{self.cfg.image_slots} (k = {self.k} per frame)")
        t = max([sum(1 for f in l.frames if f.image.length) for l in layouts] + [1])
        pos = torch.zeros(len(layouts), t, max(v, 1), dtype=torch.long)
        ok = torch.zeros(len(layouts), t, dtype=torch.bool)
        for b, l in enumerate(layouts):
            for j, f in enumerate(f for f in l.frames if f.image.length):
                pos[b, j] = torch.arange(f.image.start, f.image.stop)
                ok[b, j] = True
        return pos, ok, v

    def _select(self, scores: torch.Tensor | None, pos: torch.Tensor, v: int) -> torch.Tensor:
        """`[B, T, k]` selected vision positions per frame, sorted within each frame."""
        b, t, _ = pos.shape
        k = self.k
        if self.selection == "learned":
            frame_scores = scores.gather(1, pos.view(b, -1)).view(b, t, v)
            top = frame_scores.topk(k, dim=-1).indices
        elif self.selection == "random":
            draw = torch.rand(b, t, v, generator=self.generator).to(pos.device)
            top = draw.topk(k, dim=-1).indices
        else:
            top = uniform_offsets(v, k).to(pos.device).expand(b, t, k)
        return pos.gather(2, top.sort(dim=-1).values)

    # -- forward -------------------------------------------------------------------------------
    def run(self, call, layouts, labels, use_cache: bool) -> CausalLMOutputWithPast:
        vlm = self.vlm
        batch, length, width = call.inputs_embeds.shape
        device = call.inputs_embeds.device
        model = vlm.llm.model
        cache = DynamicCache(config=vlm.llm.config) if use_cache else None

        # which positions are vision tokens, which are real; how many each MoD layer computes
        pos, frame_ok, v = self._frame_positions(layouts)  # on the host
        real = torch.zeros(batch, length, dtype=torch.bool)
        vision = torch.zeros(batch, length, dtype=torch.bool)
        for b, l in enumerate(layouts):
            real[b, : l.length] = True
            for f in l.frames:
                vision[b, f.image.start : f.image.stop] = True
        counts = [l.length - int(frame_ok[b].sum()) * (v - self.k) for b, l in enumerate(layouts)]
        n = max(counts)
        real, vision, pos, frame_ok = real.to(device), vision.to(device), pos.to(device), frame_ok.to(device)
        text = real & ~vision
        count = torch.tensor(counts, device=device)
        valid = torch.arange(n, device=device)[None] < count[:, None]

        self.records = []
        hidden = call.inputs_embeds
        for i, layer in enumerate(model.layers):
            if i not in self.mod_layers or v == 0:
                before = hidden
                hidden = layer(hidden, **call.layer_kwargs(), past_key_values=cache, use_cache=use_cache)
                if i in self.mod_layers:  # no vision token in the batch: every token computed
                    self.records.append(LayerRecord(
                        layer=i, index=call.position_ids, count=count, selected=pos[:, :, :0], frame_ok=frame_ok,
                        before=before.detach().clone() if self.trace else None,
                        after=hidden.detach().clone() if self.trace else None))
                continue
            scores = self.routers[str(i)](hidden).squeeze(-1) if self.selection == "learned" else None
            selected = self._select(scores, pos, v)
            picked = torch.zeros(batch, length + 1, dtype=torch.bool, device=device)
            # selections of absent frames land in an extra column, which is dropped
            picked.scatter_(1, torch.where(frame_ok[:, :, None], selected, length).view(batch, -1), True)
            keep = text | picked[:, :length]
            # kept positions first, in original order (a stable sort), then the rest
            index = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices[:, :n]
            h = gather(hidden, index)
            out = layer(h, **call.subset(index, valid), past_key_values=cache, use_cache=use_cache)
            weights = None
            if scores is not None:
                is_vision = vision.gather(1, index)
                weights = torch.where(is_vision, torch.sigmoid(scores.gather(1, index)),
                                      torch.ones_like(scores[:, :1]))
                out = torch.where(is_vision[:, :, None], h + weights[:, :, None].to(out.dtype) * (out - h), out)
            new = torch.where(valid[:, :, None], out.to(hidden.dtype), h)  # filler slots: written back as is
            before = hidden
            hidden = hidden.scatter(1, index[:, :, None].expand(-1, -1, width), new)
            self.records.append(LayerRecord(
                layer=i, index=index.detach(), count=count, selected=selected.detach(), frame_ok=frame_ok,
                weights=None if weights is None else weights.detach(),
                scores=None if scores is None else scores.detach(),
                before=before.detach().clone() if self.trace else None,
                after=hidden.detach().clone() if self.trace else None))

        logits = vlm.llm.lm_head(model.norm(hidden))
        loss = None
        if labels is not None:
            target = labels[:, 1:].to(device)
            loss = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), target.reshape(-1),
                                   ignore_index=IGNORE_INDEX)
        return CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=cache)


__all__ = ["LayerRecord", "MoDVLM"]
