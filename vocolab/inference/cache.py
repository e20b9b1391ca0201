"""The VoCo cache: the per-layer keys and values of an image's K VoCo tokens, all that
answering needs (compress once, answer any number of questions).

    cache = compress(model, pixels)                  # inference.compression
    answer(model, cache, [[10, 11], [12]], 8)        # inference.answering
    cache.nbytes, cache.save("c.safetensors"), VoCoCache.load("c.safetensors")

It is immutable (every method returns a new cache; `to_dynamic_cache` hands decoding a
copy), knows the original positions of its tokens, grows frame by frame for video, and
saves as one safetensors file with a checksum, so a damaged file is refused.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import DynamicCache

FORMAT = "vocolab.VoCoCache"

FORMAT_VERSION = "1"


@dataclass
class VoCoCache:
    """Per-layer keys/values `[B, kv_heads, N, head_dim]` of the cached VoCo tokens.

    N = K for an image, T * K for a T-frame video. `positions` `[N]` are the tokens'
    original sequence positions (shared by all samples, which share V and K) and
    `next_position` is where text starts. Treat it as immutable: every method
    returns a new cache, and `to_dynamic_cache` hands out copies for decoding.
    `last_frame` (streaming video only): the CLIP features `[B, V, C]` of the last frame,
    which the next frame's change is measured against (`models.frame_deltas`); answering
    never reads them.
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    positions: torch.Tensor
    next_position: int
    k: int
    frames: int = 1
    last_frame: torch.Tensor | None = None

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
        if self.last_frame is not None and self.last_frame.shape[0] != shape[0]:
            raise ValueError(f"VoCoCache: last_frame holds {self.last_frame.shape[0]} samples, keys {shape[0]}")

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
        base = dict(positions=self.positions, next_position=self.next_position, k=self.k, frames=self.frames,
                    last_frame=self.last_frame)
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
        last = None if self.last_frame is None else self.last_frame.index_select(0, idx.to(self.last_frame.device))
        return self._with([t.index_select(0, idx) for t in self.keys],
                          [t.index_select(0, idx) for t in self.values], last_frame=last)

    def repeat(self, n: int) -> "VoCoCache":
        """Each sample repeated `n` times in a row (one image, n questions)."""
        if n < 1:
            raise ValueError(f"VoCoCache.repeat: n must be >= 1, got {n}")
        last = None if self.last_frame is None else self.last_frame.repeat_interleave(n, dim=0)
        return self._with([t.repeat_interleave(n, dim=0) for t in self.keys],
                          [t.repeat_interleave(n, dim=0) for t in self.values], last_frame=last)

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
                          next_position=other.next_position, frames=self.frames + other.frames,
                          last_frame=other.last_frame)

    def to(self, device=None, dtype=None) -> "VoCoCache":
        last = None if self.last_frame is None else self.last_frame.to(device=device)
        return self._with([t.to(device=device, dtype=dtype) for t in self.keys],
                          [t.to(device=device, dtype=dtype) for t in self.values], last_frame=last)

    # -- safetensors -----------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the cache as one safetensors file (atomically: via a temporary sibling)."""
        from safetensors.torch import save_file

        path = Path(path)
        tensors = {f"keys.{i}": t.detach().cpu().contiguous() for i, t in enumerate(self.keys)}
        tensors.update({f"values.{i}": t.detach().cpu().contiguous() for i, t in enumerate(self.values)})
        tensors["positions"] = self.positions.contiguous()
        if self.last_frame is not None:  # a stream saved mid-clip goes on from the file
            tensors["last_frame"] = self.last_frame.detach().cpu().contiguous()
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
        cache = cls(keys, values, positions, next_position, k, frames, tensors.get("last_frame"))
        return cache.to(device) if torch.device(device).type != "cpu" else cache


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode() + str(t.dtype).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


__all__ = ["FORMAT", "FORMAT_VERSION", "VoCoCache"]
