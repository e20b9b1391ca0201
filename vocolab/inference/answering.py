"""Answering against a VoCo cache: the text continues where the cached prefix ended.

RoPE is baked into the cached keys, so the text takes the positions it would have in
the full sequence (`next_position` onwards) and a bool mask `[B, 1, Q, N + past + Q]` is
rebuilt explicitly every step (this transformers version ignores `cache_position`).
Under the `voco` mask the text never attends to BOS or the image, so this path is
*exact*: its logits equal the full masked forward's for every answer token, not just the
first (the official code's mask drifted during multi-token decoding). Questions of
different lengths are left-padded into one batch; padding is hidden from everyone.
"""

from __future__ import annotations

from typing import Sequence

import torch

from vocolab.inference.cache import VoCoCache
from vocolab.inference.generate import greedy_choice
from vocolab.models.inputs import model_device


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
    device = model_device(model)
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


__all__ = ["answer", "answer_texts", "text_logits", "text_mask"]
