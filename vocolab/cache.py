"""The VoCo cache: compress an image once, answer any number of questions against it.

VoCo-LLaMA's payoff at inference (DESIGN.md 4, REFERENCE.md 1): run
`[BOS][IMG x V][VOCO x K]` once, keep only the K VoCo tokens' keys/values in every
layer, and answer questions against that tiny cache. Under the `voco` mask text
never attends to BOS or the image, so the cached path is *exact*: its logits equal
the full masked forward's, for every answer token, not just the first one (the
official code's mask drifted during multi-token decoding).

    cache = compress(model, pixels)                  # [B, H, W, 3] uint8 -> VoCoCache
    answer(model, cache, [[10, 11], [12]], 8)        # greedy token ids, one list per question
    cache.nbytes, cache.save("c.safetensors"), VoCoCache.load("c.safetensors")

Video streams: each frame t is compressed on its own, at the positions it has in
the full clip sequence and under the `video` mask (frame t sees BOS and itself), so
concatenating per-frame caches equals one `video`-mask forward over the whole clip.

Positions. RoPE is baked into the cached keys, so text must continue at the
positions it would have in the full sequence: `next_position` (= last cached
position + 1) onwards. This transformers version ignores `cache_position`;
`position_ids` and a bool mask `[B, 1, Q, N + past + Q]` are always passed explicitly.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from transformers import DynamicCache

from .layout import build_layout, greedy_choice
from .masks import sample_mask

FORMAT = "vocolab.VoCoCache"
FORMAT_VERSION = "1"


@dataclass
class VoCoCache:
    """Per-layer keys/values `[B, kv_heads, N, head_dim]` of the cached VoCo tokens.

    N = K for an image, T * K for a T-frame video. `positions` `[N]` are the tokens'
    original sequence positions (shared by all samples, which share V and K) and
    `next_position` is where text starts. Treat it as immutable: every method
    returns a new cache, and `to_dynamic_cache` hands out copies for decoding.
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    positions: torch.Tensor
    next_position: int
    k: int
    frames: int = 1

    def __post_init__(self) -> None:
        if not self.keys or len(self.keys) != len(self.values):
            raise ValueError(f"VoCoCache: need one key and one value tensor per layer, got "
                             f"{len(self.keys)} keys and {len(self.values)} values")
        shape = tuple(self.keys[0].shape)
        if len(shape) != 4:
            raise ValueError(f"VoCoCache: keys must be [B, kv_heads, N, head_dim], got {shape}")
        for i, (key, value) in enumerate(zip(self.keys, self.values)):
            if tuple(key.shape) != shape or tuple(value.shape) != shape:
                raise ValueError(f"VoCoCache: layer {i} has keys {tuple(key.shape)} / values "
                                 f"{tuple(value.shape)}, expected {shape}")
        self.positions = torch.as_tensor(self.positions, dtype=torch.long).cpu()
        if self.positions.shape != (shape[2],):
            raise ValueError(f"VoCoCache: {tuple(self.positions.shape)} positions for {shape[2]} cached tokens")
        if self.k < 1 or self.frames < 1 or self.k * self.frames != shape[2]:
            raise ValueError(f"VoCoCache: {shape[2]} cached tokens is not k={self.k} x frames={self.frames}")
        if shape[2] > 1 and not bool((self.positions[1:] > self.positions[:-1]).all()):
            raise ValueError("VoCoCache: positions must be strictly increasing")
        if self.next_position <= int(self.positions[-1]):
            raise ValueError(f"VoCoCache: next_position {self.next_position} is not after the last "
                             f"cached position {int(self.positions[-1])}")
        self.next_position = int(self.next_position)

    # -- shape -----------------------------------------------------------------------------
    @property
    def layers(self) -> int:
        return len(self.keys)

    @property
    def batch(self) -> int:
        return self.keys[0].shape[0]

    @property
    def tokens(self) -> int:
        """N: cached tokens per sample (K per frame x frames)."""
        return self.keys[0].shape[2]

    @property
    def dtype(self) -> torch.dtype:
        return self.keys[0].dtype

    @property
    def device(self) -> torch.device:
        return self.keys[0].device

    @property
    def nbytes(self) -> int:
        """Bytes held by all keys and values (layers x 2 x B x kv_heads x N x head_dim x itemsize)."""
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))

    def __repr__(self) -> str:
        b, h, n, d = self.keys[0].shape
        return (f"VoCoCache(batch={b}, layers={self.layers}, kv_heads={h}, tokens={n} "
                f"(k={self.k} x frames={self.frames}), head_dim={d}, dtype={self.dtype}, "
                f"next_position={self.next_position}, nbytes={self.nbytes})")

    # -- derived caches --------------------------------------------------------------------
    def _with(self, keys, values, **fields) -> "VoCoCache":
        base = dict(positions=self.positions, next_position=self.next_position, k=self.k, frames=self.frames)
        return VoCoCache(list(keys), list(values), **{**base, **fields})

    def to_dynamic_cache(self) -> DynamicCache:
        """A fresh `transformers.DynamicCache` holding copies, for one decoding run: the
        decoder appends to it, this VoCoCache stays untouched and can answer again."""
        cache = DynamicCache()
        for i, (key, value) in enumerate(zip(self.keys, self.values)):
            cache.update(key.clone(), value.clone(), i)
        return cache

    def select(self, indices) -> "VoCoCache":
        """The samples `indices` (int, list or LongTensor) of the batch."""
        idx = torch.as_tensor([indices] if isinstance(indices, int) else indices, dtype=torch.long)
        idx = idx.to(self.device)
        return self._with([t.index_select(0, idx) for t in self.keys],
                          [t.index_select(0, idx) for t in self.values])

    def repeat(self, n: int) -> "VoCoCache":
        """Each sample repeated `n` times in a row (one image, n questions)."""
        if n < 1:
            raise ValueError(f"VoCoCache.repeat: n must be >= 1, got {n}")
        return self._with([t.repeat_interleave(n, dim=0) for t in self.keys],
                          [t.repeat_interleave(n, dim=0) for t in self.values])

    def append(self, other: "VoCoCache") -> "VoCoCache":
        """A new cache with `other`'s tokens after this one's (streaming video: frame by frame)."""
        if (other.layers, other.batch, other.k) != (self.layers, self.batch, self.k) or \
                other.keys[0].shape[1::2] != self.keys[0].shape[1::2]:
            raise ValueError(f"VoCoCache.append: caches do not match: {self!r} vs {other!r}")
        if int(other.positions[0]) <= int(self.positions[-1]):
            raise ValueError("VoCoCache.append: the appended tokens must come after the cached ones "
                             f"(positions {other.positions.tolist()} after {self.positions.tolist()})")
        return self._with([torch.cat(p, dim=2) for p in zip(self.keys, other.keys)],
                          [torch.cat(p, dim=2) for p in zip(self.values, other.values)],
                          positions=torch.cat([self.positions, other.positions]),
                          next_position=other.next_position, frames=self.frames + other.frames)

    def to(self, device=None, dtype=None) -> "VoCoCache":
        return self._with([t.to(device=device, dtype=dtype) for t in self.keys],
                          [t.to(device=device, dtype=dtype) for t in self.values])

    # -- safetensors -----------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the cache as one safetensors file (atomically: via a temporary sibling)."""
        from safetensors.torch import save_file

        path = Path(path)
        tensors = {f"keys.{i}": t.detach().cpu().contiguous() for i, t in enumerate(self.keys)}
        tensors.update({f"values.{i}": t.detach().cpu().contiguous() for i, t in enumerate(self.values)})
        tensors["positions"] = self.positions.contiguous()
        meta = {"format": FORMAT, "version": FORMAT_VERSION, "k": str(self.k), "frames": str(self.frames),
                "next_position": str(self.next_position), "layers": str(self.layers),
                "dtype": str(self.dtype).removeprefix("torch."), "sha256": _digest(tensors)}
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata=meta)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "VoCoCache":
        """Read a cache written by `save`; a missing, truncated or altered file is a ValueError."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise ValueError(f"VoCoCache.load: {path} does not exist")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {name: f.get_tensor(name) for name in f.keys()}
        except Exception as err:  # safetensors' own errors: bad header, truncated data
            raise ValueError(f"VoCoCache.load: {path} is not a readable safetensors file: {err}") from err
        if meta.get("format") != FORMAT:
            raise ValueError(f"VoCoCache.load: {path} is not a VoCo cache (format {meta.get('format')!r})")
        try:
            layers, k, frames = int(meta["layers"]), int(meta["k"]), int(meta["frames"])
            next_position = int(meta["next_position"])
            keys = [tensors[f"keys.{i}"] for i in range(layers)]
            values = [tensors[f"values.{i}"] for i in range(layers)]
            positions = tensors["positions"]
        except (KeyError, ValueError) as err:
            raise ValueError(f"VoCoCache.load: {path} is incomplete: missing or bad {err}") from err
        if meta.get("sha256") != _digest(tensors):
            raise ValueError(f"VoCoCache.load: {path} is corrupt (its data does not match the stored sha256)")
        if str(keys[0].dtype).removeprefix("torch.") != meta.get("dtype"):
            raise ValueError(f"VoCoCache.load: {path} holds {keys[0].dtype}, metadata says {meta.get('dtype')}")
        cache = cls(keys, values, positions, next_position, k, frames)
        return cache.to(device) if torch.device(device).type != "cpu" else cache


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode() + str(t.dtype).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# -- compression ---------------------------------------------------------------------------


def _device(model) -> torch.device:
    return next(model.parameters()).device


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


def _prefix_cache(model, pixels, features, k: int, frame: int, mode: str, all_tokens: bool = False):
    """Run `[BOS][IMG_t x V][VOCO_t x K]` at frame `frame`'s positions in the full sequence
    under `mode` restricted to those tokens; return (keys, values, positions, next_position).
    With `all_tokens` keep every token's K/V (the "full caching" baseline), else only VoCo."""
    v = model.cfg.image_slots
    special = model.special
    batch = (pixels if pixels is not None else features).shape[0]
    layout = build_layout(0, 0, frames=frame + 1, image_tokens=v, voco_tokens=k)
    span = layout.frames[frame]
    index = [0, *range(span.image.start, span.voco.stop)]
    mask = sample_mask(layout, mode)[index][:, index]
    ids = [special.bos] + [special.image] * v + [special.voco] * k
    device = _device(model)
    input_ids = torch.tensor([ids], device=device).expand(batch, -1)
    pos = torch.tensor([index], device=device).expand(batch, -1)
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
    keys, values, positions, nxt = _prefix_cache(model, pixels, None, k, t, "video")
    new = VoCoCache(keys, values, positions, nxt, k, frames=1)
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


# -- answering -----------------------------------------------------------------------------


def text_mask(cached: int, real_past: torch.Tensor, real_new: torch.Tensor) -> torch.Tensor:
    """Bool mask `[B, 1, Q, cached + P + Q]` for Q new text columns after P past text columns.

    Real rows see every cached column, the real past columns and the real new columns
    up to themselves (causal); padding columns are hidden from everyone and padding
    rows see themselves only (no fully masked row, no NaN).
    """
    batch, q = real_new.shape
    p = real_past.shape[1]
    rows = real_new[:, :, None]
    mask = torch.zeros(batch, q, cached + p + q, dtype=torch.bool, device=real_new.device)
    mask[:, :, :cached] = rows
    mask[:, :, cached:cached + p] = rows & real_past[:, None, :]
    causal = torch.ones(q, q, dtype=torch.bool, device=real_new.device).tril()
    mask[:, :, cached + p:] = causal & rows & real_new[:, None, :]
    mask[:, :, cached + p:] |= torch.diag_embed(~real_new)
    return mask.unsqueeze(1)


def _broadcast(cache: VoCoCache, batch: int) -> VoCoCache:
    if cache.batch == batch:
        return cache
    if cache.batch == 1:
        return cache.repeat(batch)
    raise ValueError(f"answer: cache holds {cache.batch} samples for {batch} questions "
                     f"(give one question per cached sample, or a single-sample cache)")


def _left_pad(model, cache: VoCoCache, texts: Sequence[Sequence[int]]):
    if not texts or any(len(t) == 0 for t in texts):
        raise ValueError("answer: need at least one question, each with at least one token")
    device = _device(model)
    lens = torch.tensor([len(t) for t in texts], device=device)
    q = int(lens.max())
    tokens = torch.full((len(texts), q), model.special.pad, dtype=torch.long, device=device)
    real = torch.arange(q, device=device)[None] >= (q - lens)[:, None]
    for b, t in enumerate(texts):
        tokens[b, q - len(t):] = torch.as_tensor(list(t), dtype=torch.long, device=device)
    # real token j of sample b sits at next_position + j; padding gets next_position (never seen)
    pos = (cache.next_position + torch.arange(q, device=device)[None] - (q - lens)[:, None]).clamp_min(
        cache.next_position)
    return tokens, real, pos, lens


@torch.no_grad()
def text_logits(model, cache: VoCoCache, texts: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """Teacher forcing: logits `[len_b, vocab]` at every token of each text, read against the cache
    (text b at positions next_position + 0..len_b-1; texts of different lengths are left-padded)."""
    cache = _broadcast(cache, len(texts))
    tokens, real, pos, lens = _left_pad(model, cache, texts)
    mask = text_mask(cache.tokens, real[:, :0], real)
    logits = model(tokens, mask=mask, position_ids=pos, past_key_values=cache.to_dynamic_cache()).logits
    q = tokens.shape[1]
    return [logits[b, q - int(n):].float() for b, n in enumerate(lens)]


@torch.no_grad()
def answer(model, cache: VoCoCache, questions: Sequence[Sequence[int]], max_new_tokens: int,
           eos_id: int | None = None, return_logits: bool = False):
    """Greedy answers to `questions` (token id lists, no BOS) against `cache`.

    Questions are left-padded into one batch; each sample's text continues at the
    cache's `next_position`, every generated token takes the next position of its own
    sample, and the bool mask is rebuilt explicitly each step. A sample stops at
    `eos_id` (default `model.special.eos`); **EOS is not included** in its tokens.
    `cache.batch` must equal `len(questions)` (sample b answers question b) or be 1
    (one image, many questions). The cache itself is never modified.

    Returns the token lists, or `(tokens, logits)` with `return_logits`: per sample a
    float tensor `[steps_b, vocab]` of the logits each greedy step chose from
    (including the step that produced EOS).
    """
    if max_new_tokens < 0:
        raise ValueError(f"answer: max_new_tokens must be >= 0, got {max_new_tokens}")
    eos = model.special.eos if eos_id is None else eos_id
    batch = len(questions)
    cache = _broadcast(cache, batch)
    tokens, real, pos, lens = _left_pad(model, cache, questions)
    device = tokens.device
    past = cache.to_dynamic_cache()
    real_past = real[:, :0]
    next_pos = cache.next_position + lens
    out_tokens: list[list[int]] = [[] for _ in range(batch)]
    out_logits: list[list[torch.Tensor]] = [[] for _ in range(batch)]
    alive = torch.ones(batch, dtype=torch.bool, device=device)
    for step in range(max_new_tokens):
        mask = text_mask(cache.tokens, real_past, real)
        logits = model(tokens, mask=mask, position_ids=pos, past_key_values=past, use_cache=True).logits[:, -1]
        choice = greedy_choice(logits, model.special)
        for b in alive.nonzero().flatten().tolist():
            out_logits[b].append(logits[b].float())
            if int(choice[b]) == eos:
                alive[b] = False
            else:
                out_tokens[b].append(int(choice[b]))
        if not alive.any() or step == max_new_tokens - 1:
            break
        # finished samples are fed padding: a padding row sees only itself and is hidden from later steps
        real_past = torch.cat([real_past, real], dim=1)
        real = alive[:, None].clone()
        tokens = torch.where(alive, choice, torch.full_like(choice, model.special.pad))[:, None]
        pos = next_pos[:, None].clone()
        next_pos = next_pos + 1
    if return_logits:
        return out_tokens, [torch.stack(l) if l else torch.empty(0, model.vocab_size) for l in out_logits]
    return out_tokens


def answer_texts(model, tokenizer, cache: VoCoCache, questions: Sequence[str],
                 max_new_tokens: int = 4) -> list[str]:
    """`answer` for question strings: tokenized without specials, answers decoded to text."""
    ids = [tokenizer(q, add_special_tokens=False)["input_ids"] for q in questions]
    out = answer(model, cache, ids, max_new_tokens)
    return [tokenizer.decode(t, skip_special_tokens=True) for t in out]


__all__ = ["VoCoCache", "answer", "answer_texts", "compress", "compress_frame", "compress_video",
           "full_cache", "text_logits", "text_mask"]
