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
restricted to those rows and columns, like `vocolab.zoo.fastv` (padding is dropped
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

TODO-DOC (from mod)
"""

from __future__ import annotations

from typing import Sequence

import torch

from vocolab.training.modules import VLMModule
from vocolab.zoo.mod import MoDVLM
from vocolab.zoo.mod_config import MoDConfig


class MoDModule(VLMModule):
    """`VLMModule` (answer-span next-token loss, causal mask) training a `MoDVLM`: the
    LLM, projector and routers train together (vision frozen by default, as always).
    `self.model` is the `MoDVLM`; `self.model.vlm` the wrapped `VoCoVLM`."""

    def __init__(self, cfg=None, preset: str = "nano", overrides: dict | None = None, mask: str = "causal",
                 stage: str = "mod", steps: int | None = None, lr: float | None = None,
                 train_vision: bool | None = None, init_from: str | None = None, *, r: float = 0.2,
                 layers: str | Sequence[int] = "interleaved", selection: str = "learned", seed: int = 0,
                 mod: dict | None = None, tokenizer=None):
        if mask != "causal":
            raise ValueError(f"MoDModule: mask {mask!r} is not supported; MoD runs the causal model")
        # `mod` (a `MoDConfig.to_dict()`, as saved in the hyper-parameters) overrides r/layers/selection/seed
        config = MoDConfig(**mod) if mod is not None else MoDConfig(r=r, layers=layers, selection=selection,
                                                                     seed=seed)
        super().__init__(cfg, preset, overrides, mask=mask, stage=stage, steps=steps, lr=lr,
                         train_vision=train_vision, init_from=init_from, tokenizer=tokenizer)
        self.model = MoDVLM(self.model, config=config)
        self.save_hyperparameters(dict(self.hparams) | {"mod": config.to_dict()})

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        gates = []
        for rec in self.model.records:  # the mean gate w of the computed vision tokens (no host sync)
            if rec.scores is not None and rec.selected.numel():
                w = rec.scores.gather(1, rec.selected.flatten(1)).float().sigmoid()
                ok = rec.frame_ok[:, :, None].expand_as(rec.selected).flatten(1).float()
                gates.append((w * ok).sum() / ok.sum().clamp(min=1))
        if gates:
            self.log("train/router_gate", torch.stack(gates).mean(), batch_size=len(batch))
        return loss


__all__ = ["MoDModule"]
