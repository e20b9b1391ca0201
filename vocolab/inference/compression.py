"""Compressing images (and video frames) into a `VoCoCache`.

One forward over `[BOS][IMG x V][VOCO x K]` keeps only the VoCo positions' per-layer
keys and values. Video streams: each frame t is compressed on its own, at the positions
it has in the full clip sequence and under the `video` mask (frame t sees BOS and
itself), so concatenating per-frame caches equals one `video`-mask forward over the
whole clip. A frame's image tokens also carry its change since the frame before
(`models.frame_deltas`), so the cache keeps the last frame's CLIP features for the next
(`VoCoCache.last_frame`); answering never reads them. `full_cache` keeps every prefix
token instead: Table 7's "full caching" baseline.
"""

from __future__ import annotations

import numpy as np
import torch

from vocolab.core.layout import build_layout
from vocolab.core.masks import sample_mask
from vocolab.inference.cache import VoCoCache
from vocolab.models.inputs import model_device


def _check_k(model, k: int | None) -> int:
    k = model.cfg.voco.tokens if k is None else int(k)
    if k < 1:
        raise ValueError(f"compress: a VoCo cache needs k >= 1 VoCo tokens, got {k} "
                         f"(with no VoCo token the text sees nothing of the image: that is the blind setting)")
    return k


def _as_pixels(pixels, dims: int, what: str) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(pixels)) if isinstance(pixels, np.ndarray) else pixels
    if not isinstance(x, torch.Tensor) or x.dim() != dims:
        shape = "[B, H, W, 3]" if dims == 4 else "[B, T, H, W, 3]"
        raise ValueError(f"{what}: expected pixels {shape}, got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    return x


def _prefix_cache(model, pixels, features, k: int, frame: int, mode: str, all_tokens: bool = False,
                  previous=None):
    """Run `[BOS][IMG_t x V][VOCO_t x K]` at frame `frame`'s positions in the full sequence
    under `mode` restricted to those tokens (`previous`: frame t - 1's features, for frame t's
    change); return (keys, values, positions, next_position). With `all_tokens` keep every
    token's K/V (the "full caching" baseline), else only VoCo."""
    v = model.cfg.image_slots
    special = model.special
    batch = (pixels if pixels is not None else features).shape[0]
    layout = build_layout(0, 0, frames=frame + 1, image_tokens=v, voco_tokens=k)
    span = layout.frames[frame]
    index = [0, *range(span.image.start, span.voco.stop)]
    mask = sample_mask(layout, mode)[index][:, index]
    ids = [special.bos] + [special.image] * v + [special.voco] * k
    device = model_device(model)
    input_ids = torch.tensor([ids], device=device).expand(batch, -1)
    pos = torch.tensor([index], device=device).expand(batch, -1)
    with model.from_frame(frame, previous):  # the frame's own frame embedding and change, as in the whole clip
        out = model(input_ids, pixels=pixels, features=features, position_ids=pos,
                    mask=mask.expand(batch, 1, -1, -1).to(device), use_cache=True)
    keep = list(range(len(index))) if all_tokens else list(range(1 + v, 1 + v + k))
    sel = torch.tensor(keep, device=device)
    layers = out.past_key_values.layers
    keys = [layer.keys.index_select(2, sel) for layer in layers]
    values = [layer.values.index_select(2, sel) for layer in layers]
    positions = torch.tensor([index[i] for i in keep])
    return keys, values, positions, span.voco.stop


@torch.no_grad()
def compress(model, pixels=None, k: int | None = None, *, features=None) -> VoCoCache:
    """Compress images uint8 `[B, H, W, 3]` (or CLIP `features` `[B, V, Dv]`) into a VoCoCache.

    One forward over `[BOS][IMG x V][VOCO x K]` (causal over that prefix, which is what
    the `voco` mask is there); only the K VoCo tokens' per-layer K/V are kept.
    `k` defaults to `model.cfg.voco.tokens`.
    """
    k = _check_k(model, k)
    if (pixels is None) == (features is None):
        raise ValueError("compress: give pixels or features (one of them)")
    if pixels is not None:
        pixels = _as_pixels(pixels, 4, "compress")
    keys, values, positions, nxt = _prefix_cache(model, pixels, features, k, 0, "voco")
    return VoCoCache(keys, values, positions, nxt, k, frames=1)


@torch.no_grad()
def compress_frame(model, cache: VoCoCache | None, frame_pixels, t: int | None = None,
                   k: int | None = None) -> VoCoCache:
    """Streaming video: compress frame `t` (uint8 `[B, H, W, 3]`) and append it to `cache`.

    The frame runs as `[BOS][IMG_t][VOCO_t]` at the positions it has in the full clip
    (BOS at 0, frame t's image at 1 + t * (V + K)) under the `video` mask restricted to
    those tokens (frame t sees BOS and itself only), so the result equals the VoCo
    K/V of one `video`-mask forward over the whole clip. `t` defaults to the number of
    frames already cached; it must equal it (frames arrive in order).
    """
    expected = 0 if cache is None else cache.frames
    t = expected if t is None else int(t)
    if t != expected:
        raise ValueError(f"compress_frame: frame {t} given, but the cache holds {expected} frame(s): "
                         f"frames must be compressed in order")
    if cache is not None:
        k = cache.k if k is None else k
        if k != cache.k:
            raise ValueError(f"compress_frame: k={k} but the cache was built with k={cache.k}")
    k = _check_k(model, k)
    pixels = _as_pixels(frame_pixels, 4, "compress_frame")
    previous = None if cache is None else cache.last_frame
    if t and previous is None:
        raise ValueError("compress_frame: the cache keeps no last frame's features (VoCoCache.last_frame), "
                         "which the next frame's change is measured against: compress the clip from frame 0")
    features = model.encode_images(pixels.to(model_device(model)))
    keys, values, positions, nxt = _prefix_cache(model, None, features, k, t, "video", previous=previous)
    new = VoCoCache(keys, values, positions, nxt, k, frames=1, last_frame=features)
    return new if cache is None else cache.append(new)


@torch.no_grad()
def compress_video(model, frames, k: int | None = None) -> VoCoCache:
    """Compress clips uint8 `[B, T, H, W, 3]` frame by frame (see `compress_frame`)."""
    frames = _as_pixels(frames, 5, "compress_video")
    cache = None
    for t in range(frames.shape[1]):
        cache = compress_frame(model, cache, frames[:, t], t, k)
    return cache


@torch.no_grad()
def full_cache(model, pixels, k: int | None = None) -> tuple[VoCoCache, int]:
    """The "full caching" baseline of Table 7: K/V of *every* prefix token (BOS, V image
    tokens, K VoCo tokens). Returned as a VoCoCache-shaped object with `k` = 1 + V + K
    (so `answer` can run against it: text then sees the whole image, like `causal`)
    plus the true K."""
    k = _check_k(model, k)
    pixels = _as_pixels(pixels, 4, "full_cache")
    keys, values, positions, nxt = _prefix_cache(model, pixels, None, k, 0, "voco", all_tokens=True)
    return VoCoCache(keys, values, positions, nxt, k=len(positions), frames=1), k


__all__ = ["compress", "compress_frame", "compress_video", "full_cache"]
