"""FastV (Chen et al. 2024, "An image is worth 1/2 tokens after layer 2"): training-free
dropping of image tokens *inside* the LLM of the upper-bound (causal mask) model.

The first `layer` decoder layers run on every token. At layer `layer - 1` the attention
probabilities are recomputed from that layer's input (`input_layernorm`, `q_proj`,
`k_proj`, RoPE, grouped kv heads repeated, scaled, masked softmax), and each image token
is scored by the attention it *receives*: averaged over heads and over every query that
may attend to it (under the causal mask: itself and every later real token). The top
`keep` image tokens of each frame (in original order) and every non-image token go on
through layers `[layer:]`, with their ORIGINAL position ids (RoPE positions unchanged)
and the mask restricted to the kept rows/columns; then the final norm and the LM head.

Logits come back at the original positions `[B, L, vocab]`; dropped (and padding)
positions hold 0 and must not be read. Right padding is dropped together with the
pruned image tokens (the kept tokens of each sample are re-packed and re-padded), so
samples of different lengths, frame counts and text-only samples can share a batch.

Note on the ranking: the paper ranks by the average attention an image token receives;
the official code uses the attention of the *last* token only. Here it is the average
over all queries that may attend to the token (the paper's wording), as the brief asks.

`fastv_flops` gives the analytic forward FLOPs of one FastV prefill in the conventions of
`vocolab.flops.analytic_flops` (2 FLOPs per multiply-add, dense attention), which a
test matches exactly against `measured_flops`; `fastv_paper_ratio` gives the paper's
own theoretical estimate (Sec. 4: K x (4nd^2 + 2n^2d + 2ndm) + (T - K) x (same at n_hat)).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from transformers.modeling_outputs import CausalLMOutputWithPast

from vocolab.core.layout import IGNORE_INDEX, Layout
from vocolab.inference.flops import analytic_flops
from vocolab.models.inputs import gather
from vocolab.models.layerwise import LayerwiseVLM


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class FastVModel(LayerwiseVLM):
    """A `VoCoVLM` run FastV-style: keep `keep` image tokens per frame after `layer` layers.

    Call it like `VoCoVLM.forward` (`input_ids, layouts, pixels=None, features=None,
    mask="causal", labels=None`); only the causal mask is accepted. The kept original
    indices of each sample of the last call are in `last_kept` (list of LongTensors),
    and each sample's received-attention score per original position (NaN outside image
    tokens) in `last_scores`.
    """

    cache_reason = "FastV reruns the whole sequence; its kept tokens change with it"

    def __init__(self, vlm, keep: int, layer: int = 2):
        super().__init__(vlm)
        n_layers = len(vlm.llm.model.layers)
        v = vlm.cfg.data.image_tokens
        if not isinstance(layer, int) or not 1 <= layer <= n_layers:
            raise ValueError(f"FastVModel: layer={layer!r}; need 1 <= layer <= {n_layers} (LLM layers)")
        if not isinstance(keep, int) or not 1 <= keep <= v:
            raise ValueError(f"FastVModel: keep={keep!r}; need 1 <= keep <= {v} (image tokens per frame)")
        self.keep, self.layer = keep, layer
        self.last_kept: list[torch.Tensor] = []
        self.last_scores: list[torch.Tensor] = []

    @property
    def image_tokens(self) -> int:
        return self.vlm.cfg.data.image_tokens

    # -- ranking -----------------------------------------------------------------------------
    def attention_probs(self, layer_module, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                        bool_mask: torch.Tensor) -> torch.Tensor:
        """`[B, H, L, L]` attention probabilities of `layer_module` on its input `hidden`,
        recomputed the way its attention computes them (bool_mask `[B, 1, L, L]`)."""
        attn = layer_module.self_attn
        conf = self.vlm.llm.config
        heads, kv_heads = conf.num_attention_heads, conf.num_key_value_heads
        b, n, _ = hidden.shape
        x = layer_module.input_layernorm(hidden)
        q = attn.q_proj(x).view(b, n, heads, -1).transpose(1, 2)
        k = attn.k_proj(x).view(b, n, kv_heads, -1).transpose(1, 2)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        k = k.repeat_interleave(heads // kv_heads, dim=1)
        scaling = getattr(attn, "scaling", q.shape[-1] ** -0.5)
        scores = torch.matmul(q, k.transpose(2, 3)) * scaling
        scores = scores.float().masked_fill(~bool_mask, float("-inf"))
        return scores.softmax(dim=-1)

    @staticmethod
    def received_attention(probs: torch.Tensor, bool_mask: torch.Tensor) -> torch.Tensor:
        """`[B, L]`: attention each key receives, averaged over heads and over the queries
        allowed to attend to it (bool_mask `[B, 1, L, L]`, rows = queries)."""
        allowed = bool_mask[:, 0].float()
        total = (probs.mean(dim=1) * allowed).sum(dim=1)
        return total / allowed.sum(dim=1).clamp(min=1)

    def _kept(self, layout: Layout, scores: torch.Tensor) -> torch.Tensor:
        image = torch.zeros(layout.length, dtype=torch.bool)
        parts = []
        for f in layout.frames:
            if not f.image.length:
                continue
            image[f.image.start:f.image.stop] = True
            k = min(self.keep, f.image.length)
            top = scores[f.image.start:f.image.stop].topk(k).indices + f.image.start
            parts.append(top)
        parts.append(torch.nonzero(~image).flatten())
        return torch.cat(parts).sort().values

    # -- forward -------------------------------------------------------------------------------
    def run(self, call, layouts, labels, use_cache: bool) -> CausalLMOutputWithPast:
        if use_cache:
            raise ValueError("FastVModel: use_cache is not supported (no KV cache is built)")
        vlm = self.vlm
        hidden = call.inputs_embeds
        batch, length = hidden.shape[:2]
        device = hidden.device
        model = vlm.llm.model
        layers = model.layers

        for i in range(self.layer):
            if i == self.layer - 1:
                probs = self.attention_probs(layers[i], hidden, *call.rope, call.bool_mask)
                scores = self.received_attention(probs, call.bool_mask).cpu()
            hidden = layers[i](hidden, **call.layer_kwargs())

        kept = [self._kept(l, scores[b]) for b, l in enumerate(layouts)]
        self.last_kept = kept
        self.last_scores = []
        for b, l in enumerate(layouts):
            s = torch.full((l.length,), float("nan"))
            for p in l.image_positions():
                s[p] = scores[b, p]
            self.last_scores.append(s)

        # re-pack each sample's kept tokens (padding dropped), re-pad to the longest
        new_len = max(len(k) for k in kept)
        idx = torch.zeros(batch, new_len, dtype=torch.long)
        valid = torch.zeros(batch, new_len, dtype=torch.bool)
        for b, k in enumerate(kept):
            idx[b, :len(k)] = k
            valid[b, :len(k)] = True
        idx, valid = idx.to(device), valid.to(device)
        kept_args = call.subset(idx, valid)  # padding slots see themselves only
        hidden = gather(hidden, idx)
        for layer_module in layers[self.layer:]:
            hidden = layer_module(hidden, **kept_args)
        sub_logits = vlm.llm.lm_head(model.norm(hidden))

        logits = sub_logits.new_zeros(batch, length, sub_logits.shape[-1])
        for b, k in enumerate(kept):
            logits[b, k.to(device)] = sub_logits[b, :len(k)]

        loss = None
        if labels is not None:
            # logits at position t predict label t + 1; pairs whose predicting position was
            # dropped (or is padding) are ignored
            alive = torch.zeros(batch, length, dtype=torch.bool, device=device)
            for b, k in enumerate(kept):
                alive[b, k.to(device)] = True
            target = labels[:, 1:].to(device).masked_fill(~alive[:, :-1], IGNORE_INDEX)
            loss = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                                   target.reshape(-1), ignore_index=IGNORE_INDEX)
        return CausalLMOutputWithPast(loss=loss, logits=logits)


# -- FLOPs -------------------------------------------------------------------------------------


def fastv_flops(cfg, vocab: int, seq_len: int, image_tokens: int, keep: int, layer: int) -> int:
    """Analytic forward FLOPs of one FastV prefill (batch 1, no padding, LLM only).

    `image_tokens` and `keep` count the whole sequence (for T frames: T x V and T x keep).
    Layers `[:layer]` run on `seq_len` tokens, layers `[layer:]` and the LM head on
    `seq_len - (image_tokens - keep)`, plus the ranking at layer `layer - 1`: the
    recomputed q/k projections (2 n d (d + d_kv)) and QK^T (2 n^2 d). Elementwise work
    (norms, RoPE, softmax, the averaging) is not counted, as in `analytic_flops`.
    """
    m = cfg.llm
    if not 1 <= layer <= m.layers:
        raise ValueError(f"fastv_flops: layer={layer}; need 1 <= layer <= {m.layers}")
    if not 0 <= keep <= image_tokens <= seq_len:
        raise ValueError(f"fastv_flops: need 0 <= keep ({keep}) <= image_tokens ({image_tokens}) "
                         f"<= seq_len ({seq_len})")
    sizes = dict(hidden=m.hidden_size, intermediate=m.intermediate_size, heads=m.heads,
                 kv_heads=m.kv_heads, vocab=vocab)
    n, n_hat = seq_len, seq_len - (image_tokens - keep)
    full = analytic_flops(layers=layer, q_len=n, kv_len=n, logits=0, **sizes)
    pruned = analytic_flops(layers=m.layers - layer, q_len=n_hat, kv_len=n_hat, **sizes)
    d = m.hidden_size
    d_kv = m.kv_heads * (d // m.heads)
    ranking = 2 * n * d * (d + d_kv) + 2 * n * n * d
    return int(full + pruned + ranking)


class PaperFlops(NamedTuple):
    """The FastV paper's theoretical FLOPs: pruned and unpruned."""

    pruned: float
    full: float

    @property
    def ratio(self) -> float:
        return self.pruned / self.full

    @property
    def reduction(self) -> float:
        return 1 - self.pruned / self.full


def fastv_paper_ratio(cfg, n: int, n_hat: int, layer: int) -> PaperFlops:
    """The paper's estimate: K x (4nd^2 + 2n^2 d + 2ndm) + (T - K) x (4 n_hat d^2 + 2 n_hat^2 d
    + 2 n_hat d m) with T layers, K = `layer`, d hidden, m MLP width, next to the unpruned
    T x (4nd^2 + 2n^2 d + 2ndm). Returns `PaperFlops(pruned, full)` (`.ratio`, `.reduction`).

    It counts multiply-adds of a 2-matrix MLP and leaves out the ranking and the LM head,
    so it is an estimate of the share saved, not of `fastv_flops`.
    """
    m = cfg.llm
    t, d, mlp = m.layers, m.hidden_size, m.intermediate_size
    if not 1 <= layer <= t:
        raise ValueError(f"fastv_paper_ratio: layer={layer}; need 1 <= layer <= {t}")
    if not 0 <= n_hat <= n:
        raise ValueError(f"fastv_paper_ratio: need 0 <= n_hat ({n_hat}) <= n ({n})")

    def per_layer(x):
        return 4 * x * d * d + 2 * x * x * d + 2 * x * d * mlp

    return PaperFlops(pruned=layer * per_layer(n) + (t - layer) * per_layer(n_hat), full=t * per_layer(n))


__all__ = ["FastVModel", "PaperFlops", "fastv_flops", "fastv_paper_ratio"]
