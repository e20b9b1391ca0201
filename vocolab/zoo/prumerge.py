"""LLaVA-PruMerge (Shang et al. 2024): keep the patches CLIP's CLS token looks at, merge the rest in.

Why: CLIP's CLS attention is sparse; the few patches it singles out carry most of what
the image-level representation uses. PruMerge keeps the patches whose CLS attention is
an IQR outlier (> Q3 + 1.5 IQR, per image), so the number kept adapts to the image (at
least 1, at most K: the highest-attention ones when more qualify), and folds the pruned
patches back in: each kept token becomes the CLS-attention-weighted average of itself
and its `neighbours` most similar pruned patches (cosine similarity of that layer's keys).
Training-free: it runs on the upper-bound model as is.

`prumerge_inputs` computes the two extras it needs from a `transformers` CLIPVisionModel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

from vocolab.zoo.pooling import check_features
from vocolab.zoo.registry import Compressor, MethodInfo, register

IQR_FACTOR = 1.5


def outlier_patches(cls_attention: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (ascending) of one image's IQR-outlier patches, at least the top-1, at most K."""
    q1, q3 = torch.quantile(cls_attention.float(), torch.tensor([0.25, 0.75], device=cls_attention.device))
    keep = (cls_attention > q3 + IQR_FACTOR * (q3 - q1)).nonzero().flatten()
    if keep.numel() == 0 or keep.numel() > k:
        keep = cls_attention.topk(min(k, max(keep.numel(), 1))).indices
    return keep.sort().values


def merge_neighbours(features: torch.Tensor, weights: torch.Tensor, keys: torch.Tensor,
                     keep: torch.Tensor, neighbours: int) -> torch.Tensor:
    """`[K_i, C]`: each kept patch averaged with its nearest pruned patches (by key cosine
    similarity), weighted by CLS attention, its own weight included."""
    pruned = torch.ones(features.shape[0], dtype=torch.bool, device=features.device)
    pruned[keep] = False
    pruned = pruned.nonzero().flatten()
    take = min(neighbours, pruned.numel())
    if take == 0:
        return features[keep]
    sim = F.normalize(keys[keep], dim=-1) @ F.normalize(keys[pruned], dim=-1).T  # [K_i, P]
    near = pruned[sim.topk(take, dim=1).indices]  # [K_i, take]
    group = torch.cat([keep[:, None], near], dim=1)  # [K_i, 1 + take]
    w = weights[group]
    return torch.einsum("kg,kgc->kc", w, features[group]) / w.sum(dim=1, keepdim=True)


@register(MethodInfo("prumerge", "pre", trainable=False, needs_attention=True, adaptive=True,
                     summary="keep CLS-attention IQR outliers (<= K), merge similar pruned patches into them"))
class PruMerge(Compressor):
    def __init__(self, cfg, k: int, neighbours: int = 8):
        super().__init__(cfg, k)
        if not isinstance(neighbours, int) or neighbours < 0:
            raise ValueError(f"prumerge: neighbours={neighbours!r} must be an int >= 0")
        self.neighbours = neighbours

    def forward(self, features, query=None, extras=None):
        name = self.info.name
        check_features(name, features, self.patches, self.dim)
        n = features.shape[0]
        if not extras or "cls_attention" not in extras or "keys" not in extras:
            raise ValueError(f"{name}: extras must hold 'cls_attention' [N, V] and 'keys' [N, V, Dv] "
                             f"(see vocolab.zoo.prumerge.prumerge_inputs)")
        attn, keys = extras["cls_attention"], extras["keys"]
        if attn.shape != (n, self.patches):
            raise ValueError(f"{name}: extras['cls_attention'] must be [{n}, {self.patches}], got {tuple(attn.shape)}")
        if keys.dim() != 3 or keys.shape[:2] != (n, self.patches):
            raise ValueError(f"{name}: extras['keys'] must be [{n}, {self.patches}, Dv], got {tuple(keys.shape)}")
        attn, keys = attn.to(features.device), keys.to(features.device)
        return [merge_neighbours(features[i], attn[i].to(features.dtype), keys[i],
                                 keep.to(features.device), self.neighbours)
                for i, keep in enumerate(self.kept_patches(extras))]

    def kept_patches(self, extras) -> list[torch.Tensor]:
        """Each image's kept patch indices (ascending): output token j stands at patch j."""
        return [outlier_patches(a, self.k) for a in extras["cls_attention"]]


@torch.no_grad()
def prumerge_inputs(vision_model, pixel_values: torch.Tensor, layer: int = -2) -> dict[str, torch.Tensor]:
    """PruMerge's extras for the patch features `hidden_states[layer]` of a CLIPVisionModel.

    `hidden_states[0]` is the embeddings and `hidden_states[i]` the output of encoder layer
    i - 1, so the attention that produced `hidden_states[layer]` is that of encoder layer
    `layer - 1`, computed from its input `hidden_states[layer - 1]`. Returns
    `cls_attention [N, V]` (CLS query -> patch keys, softmax probabilities averaged over
    heads) and `keys [N, V, Dv]` (that layer's patch keys, heads concatenated).
    """
    param = next(vision_model.parameters())
    out = vision_model(pixel_values=pixel_values.to(device=param.device, dtype=param.dtype),
                       output_hidden_states=True)
    states = out.hidden_states
    index = layer + len(states) if layer < 0 else layer
    if not 1 <= index < len(states):
        raise ValueError(f"prumerge_inputs: layer={layer} must name an encoder layer's output "
                         f"(1..{len(states) - 1} or -{len(states) - 1}..-1; 0 is the embeddings)")
    block = getattr(vision_model, "vision_model", vision_model).encoder.layers[index - 1]
    attn = block.self_attn
    h = block.layer_norm1(states[index - 1])
    q = rearrange(attn.q_proj(h), "n t (h d) -> n h t d", h=attn.num_heads)
    k = rearrange(attn.k_proj(h), "n t (h d) -> n h t d", h=attn.num_heads)
    probs = torch.softmax((q[:, :, :1] @ k.transpose(-1, -2)).float() * attn.scale, dim=-1)  # [N, H, 1, T]
    return {"cls_attention": probs[:, :, 0, 1:].mean(dim=1), "keys": rearrange(k, "n h t d -> n t (h d)")[:, 1:]}


__all__ = ["PruMerge", "merge_neighbours", "outlier_patches", "prumerge_inputs"]
