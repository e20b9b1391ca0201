"""Per-sample sequence layouts, counted from the start of the sequence.

The official VoCo-LLaMA code located VoCo tokens by offsets from the *end* of the
sequence, which broke under truncation, during decoding and in mixed batches.
Here every sample carries a `Layout` with absolute start offsets, built at the
same moment as its token ids, so masks, caches and losses never have to guess.

    [BOS] [IMG x V][VOCO x K] (... one pair per frame ...) [question] [answer] [EOS] [PAD ...]
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import torch


@dataclass(frozen=True)
class Span:
    """A half-open range [start, start + length) of positions."""

    start: int
    length: int

    @property
    def stop(self) -> int:
        return self.start + self.length

    def range(self) -> range:
        return range(self.start, self.stop)


@dataclass(frozen=True)
class Frame:
    """One image (or one video frame): its patch tokens and its VoCo tokens."""

    image: Span
    voco: Span


@dataclass(frozen=True)
class Layout:
    """Where every segment of one sample sits; BOS is always position 0."""

    length: int  # real tokens (padding excluded)
    frames: tuple[Frame, ...]
    text: Span  # everything after the last VoCo token: question, answer, EOS
    answer: Span  # the positions whose tokens the loss scores (answer + EOS)
    turns: tuple[Span, ...] = ()  # answer spans of earlier turns (multi-turn samples), also scored

    @property
    def voco_tokens(self) -> int:
        """K per frame (0 for text-only samples)."""
        return self.frames[0].voco.length if self.frames else 0

    @property
    def image_tokens(self) -> int:
        """V per frame (0 for text-only samples)."""
        return self.frames[0].image.length if self.frames else 0

    @property
    def has_voco(self) -> bool:
        return any(f.voco.length for f in self.frames)

    def voco_positions(self) -> list[int]:
        return [p for f in self.frames for p in f.voco.range()]

    def image_positions(self) -> list[int]:
        return [p for f in self.frames for p in f.image.range()]

    @property
    def question(self) -> Span:
        """The last question (after any earlier turns)."""
        start = self.turns[-1].stop if self.turns else self.text.start
        return Span(start, self.answer.start - start)

    def scored(self) -> tuple[Span, ...]:
        """Every answer span the loss scores, earlier turns first."""
        return self.turns + (self.answer,)


def build_layout(
    question_len: int,
    answer_len: int,
    *,
    frames: int = 1,
    image_tokens: int = 0,
    voco_tokens: int = 0,
) -> Layout:
    """Layout of `[BOS] ([IMG x V][VOCO x K]) x frames [question] [answer + EOS]`.

    `answer_len` counts the EOS token. `frames=0` (or `image_tokens=0` with no VoCo
    tokens) gives a text-only sample.
    """
    if min(question_len, answer_len, frames, image_tokens, voco_tokens) < 0:
        raise ValueError("layout: lengths must be non-negative")
    pos = 1  # after BOS
    spans = []
    if image_tokens or voco_tokens:
        for _ in range(frames):
            image = Span(pos, image_tokens)
            voco = Span(image.stop, voco_tokens)
            spans.append(Frame(image, voco))
            pos = voco.stop
    text = Span(pos, question_len + answer_len)
    answer = Span(pos + question_len, answer_len)
    return Layout(length=text.stop, frames=tuple(spans), text=text, answer=answer)


@dataclass(frozen=True)
class SpecialIds:
    """Token ids the sequence builder needs (read off the tokenizer)."""

    bos: int
    eos: int
    pad: int
    image: int
    voco: int


def assemble(
    question_ids: Sequence[int],
    answer_ids: Sequence[int],
    ids: SpecialIds,
    *,
    frames: int = 1,
    image_tokens: int = 0,
    voco_tokens: int = 0,
    add_eos: bool = True,
) -> tuple[list[int], Layout]:
    """Token ids and their layout for one sample; image slots hold `ids.image`."""
    answer = list(answer_ids) + ([ids.eos] if add_eos else [])
    layout = build_layout(len(question_ids), len(answer), frames=frames,
                          image_tokens=image_tokens, voco_tokens=voco_tokens)
    tokens = [ids.bos]
    for frame in layout.frames:
        tokens += [ids.image] * frame.image.length + [ids.voco] * frame.voco.length
    tokens += list(question_ids) + answer
    assert len(tokens) == layout.length
    return tokens, layout


def assemble_turns(
    turns: Sequence[tuple[Sequence[int], Sequence[int]]],
    ids: SpecialIds,
    *,
    frames: int = 1,
    image_tokens: int = 0,
    voco_tokens: int = 0,
) -> tuple[list[int], Layout]:
    """Several question/answer turns about one image in one sequence (LLaVA-style):
    `[BOS][IMG][VOCO] q1 a1 EOS q2 a2 EOS ...`, every answer span scored.

    The image prefix is paid once for all turns, which makes training several times
    cheaper per answered question. The first turn is laid out exactly as a single
    question at evaluation time.
    """
    if not turns:
        raise ValueError("assemble_turns: need at least one (question, answer) turn")
    prior: list[int] = []
    offsets = []
    for q, a in turns[:-1]:
        offsets.append((len(prior) + len(q), len(a) + 1))
        prior += list(q) + list(a) + [ids.eos]
    last_q, last_a = turns[-1]
    tokens, layout = assemble(prior + list(last_q), last_a, ids, frames=frames,
                              image_tokens=image_tokens, voco_tokens=voco_tokens)
    spans = tuple(Span(layout.text.start + start, length) for start, length in offsets)
    return tokens, replace(layout, turns=spans)


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int, length: int | None = None) -> torch.Tensor:
    """Right-pad token id lists into a `[B, L]` LongTensor."""
    longest = max(len(s) for s in sequences)
    length = longest if length is None else length
    if length < longest:
        raise ValueError(f"pad_batch: length {length} is shorter than the longest sample ({longest})")
    out = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    for i, seq in enumerate(sequences):
        out[i, : len(seq)] = torch.as_tensor(list(seq), dtype=torch.long)
    return out


def position_ids(batch: int, length: int, device: torch.device | str | None = None) -> torch.Tensor:
    """`[B, L]` positions: `arange` over each sample, so text keeps the positions it
    would have with every image token present (padding positions are never attended)."""
    return torch.arange(length, device=device).unsqueeze(0).expand(batch, length).contiguous()


IGNORE_INDEX = -100  # the label value cross-entropy skips


def labels_from_layouts(input_ids: torch.Tensor, layouts: Sequence[Layout]) -> torch.Tensor:
    """Labels for `forward`: -100 everywhere except each sample's answer span (answer
    tokens + EOS), which keeps its token ids. No shift here: the LLM shifts itself."""
    if len(layouts) != input_ids.shape[0]:
        raise ValueError(f"labels_from_layouts: {len(layouts)} layouts for a batch of {input_ids.shape[0]}")
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    for b, layout in enumerate(layouts):
        if layout.length > input_ids.shape[1]:
            raise ValueError(f"labels_from_layouts: sample {b} ({layout.length} tokens) is longer "
                             f"than the batch ({input_ids.shape[1]})")
        for span in layout.scored():
            labels[b, span.start : span.stop] = input_ids[b, span.start : span.stop]
    return labels
