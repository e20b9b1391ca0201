"""One `LightningDataModule` for every stage.

A stage differs only in what a sample is:

* `clip`:    (image, caption) pairs for the contrastive CLIP stage;
* `caption`: `[BOS][IMG][VOCO][caption][EOS]`, the pretrain (alignment) stage;
* `qa`:      `[BOS][IMG][VOCO][question][answer][EOS]`, one sample per question, or
             with `turns=True` every question of an image in one sequence (training:
             the image prefix is paid once for all its questions).

Frozen CLIP features can be computed once for every image (`attach_features`),
LLaVA-style; batches then carry features instead of pixels, which removes the
vision tower from every training step (the biggest CPU speed-up there is).
"""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..batching import Batch, make_batch
from ..config import Config, resolve_config
from .storage import load_split, numpy_view
from .tokenizer import build_tokenizer, special_ids

TASKS = ("clip", "caption", "qa")


@dataclass
class Split:
    """One split held in memory: uint8 images (or clips) and their texts."""

    images: np.ndarray  # [N, H, W, 3] or [N, T, H, W, 3]
    captions: list[str]
    questions: list[list[str]]
    answers: list[list[str]]
    families: list[list[str]]
    templates: list[list[str]]
    features: torch.Tensor | None = None  # frozen CLIP features [N, (T,) V, Dv]
    features_of: str | None = None  # fingerprint of the vision tower that made them

    @classmethod
    def load(cls, cfg: Config, kind: str, split: str, n: int | None = None, progress: bool = True) -> "Split":
        ds = load_split(cfg.data, kind, split, n=n, progress=progress)
        pixels = numpy_view(ds.select_columns(["frames" if kind == "clips" else "image"]))
        return cls(images=pixels[:][pixels.column_names[0]], captions=list(ds["caption"]),
                   questions=list(ds["question"]), answers=list(ds["answer"]), families=list(ds["family"]),
                   templates=list(ds["template"]))

    def examples(self, task: str, turns: bool = False) -> list[tuple[int, int]]:
        """(item, question) index pairs; question -1 stands for the caption (or, with
        `turns`, for all of the item's questions)."""
        if task == "qa" and not turns:
            return [(i, j) for i, qs in enumerate(self.questions) for j in range(len(qs))]
        return [(i, -1) for i in range(len(self.captions))]


def vision_fingerprint(module: torch.nn.Module) -> str:
    """Cheap identity of a module's weights: cached features are reused only for the same tower."""
    with torch.no_grad():
        return ",".join(f"{p.double().sum().item():.10e}" for p in module.parameters())


class ResumableSampler(Sampler[int]):
    """A fresh seeded permutation every epoch that can start part-way through one.

    Lightning restarts an interrupted epoch from its first batch; this sampler lets
    a resumed run skip exactly the batches it had already trained on, so resuming
    from a mid-epoch checkpoint ends with the same weights as never stopping.
    Lightning tells it the epoch through `set_epoch`.
    """

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0
        self.resume: tuple[int, int] | None = None  # (epoch, samples already trained on)

    def __len__(self) -> int:
        return self.size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        if self.resume is not None and self.resume[0] == self.epoch:
            order, self.resume = order[self.resume[1] :], None
        yield from order

    def resume_at(self, step: int, batch_size: int) -> None:
        per_epoch = self.size // batch_size  # drop_last: only whole batches are trained on
        epoch, batches = divmod(step, per_epoch)
        self.resume = (epoch, batches * batch_size) if batches else None


class ExampleDataset(Dataset):
    def __init__(self, split: Split, task: str, turns: bool = False):
        self.split, self.index = split, split.examples(task, turns)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[int, int]:
        return self.index[i]


class VoCoDataModule(L.LightningDataModule):
    """Scenes or clips, train and held-out, batched for one task."""

    def __init__(self, cfg: Config | dict | None = None, task: str = "qa", kind: str = "scenes",
                 batch_size: int | None = None, preset: str = "nano", overrides: dict | None = None,
                 train_n: int | None = None, heldout_n: int | None = None, voco_tokens: int | None = None,
                 seed: int | None = None, turns: bool = False, progress: bool = True):
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"task {task!r} is not one of {TASKS}")
        if kind not in ("scenes", "clips"):
            raise ValueError(f"kind {kind!r} is not 'scenes' or 'clips'")
        cfg = resolve_config(cfg, preset, overrides)
        self.cfg, self.task, self.kind = cfg, task, kind
        self.batch_size = batch_size or cfg.train.batch_size
        self.sizes = {"train": train_n, "heldout": heldout_n}
        self.voco_tokens = cfg.voco.tokens if voco_tokens is None else voco_tokens
        self.image_slots = cfg.image_slots  # V, or K for a model with a zoo compressor
        self.seed = cfg.seed if seed is None else seed
        self.turns = turns  # training batches hold all questions of an image per sequence
        self.progress = progress
        self.tokenizer = build_tokenizer(cfg.data)
        self.ids = special_ids(self.tokenizer)
        self.splits: dict[str, Split] = {}
        self._sampler: ResumableSampler | None = None
        self._resume_step = 0

    def setup(self, stage: str | None = None) -> None:
        for name in ("train", "heldout"):
            if name not in self.splits:
                self.splits[name] = Split.load(self.cfg, self.kind, name, self.sizes[name], self.progress)

    def attach_features(self, encode, batch_size: int = 256) -> None:
        """Precompute frozen features for every image with `encode` (a `VoCoVLM.encode_images`);
        recomputed only when the vision tower's weights differ from the last call's."""
        self.setup()
        owner = getattr(encode, "__self__", None)
        key = (f"{vision_fingerprint(owner.vision)}|layers={owner.vision_layers}" if owner is not None
               else repr(encode))
        for split in self.splits.values():
            if split.features is not None and split.features_of == key:
                continue
            chunks = []
            with torch.no_grad():
                for start in range(0, len(split.images), batch_size):
                    chunk = torch.from_numpy(split.images[start : start + batch_size])
                    chunks.append(encode(chunk).float().cpu())
            split.features, split.features_of = torch.cat(chunks), key

    def set_task(self, task: str, voco_tokens: int | None = None,
                 image_slots: int | None = None) -> "VoCoDataModule":
        """Reuse loaded data (and cached features) for another stage; `image_slots` is the
        number of sequence slots per image (K for a model with a zoo compressor)."""
        if task not in TASKS:
            raise ValueError(f"task {task!r} is not one of {TASKS}")
        self.task = task
        if voco_tokens is not None:
            self.voco_tokens = voco_tokens
        if image_slots is not None:
            self.image_slots = image_slots
        return self

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        """`Batch` knows how to move itself (its layouts stay on the host)."""
        if isinstance(batch, Batch):
            return batch.to(device)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    # -- batching -------------------------------------------------------------------
    def collate(self, split: Split, pairs: list[tuple[int, int]]):
        items = [i for i, _ in pairs]
        if self.task == "clip":
            enc = self.tokenizer([split.captions[i] for i in items], padding=True, add_special_tokens=False)
            ids = [row + [self.ids.eos] for row in enc["input_ids"]]  # CLIP pools at EOS
            width = max(len(r) for r in ids)
            input_ids = torch.full((len(ids), width), self.ids.pad, dtype=torch.long)
            for b, row in enumerate(ids):
                input_ids[b, : len(row)] = torch.tensor(row)
            return {"pixels": torch.from_numpy(split.images[items]), "input_ids": input_ids,
                    "attention_mask": (input_ids != self.ids.pad).long()}
        if self.task == "qa" and pairs[0][1] < 0:  # multi-turn: every question of the item
            questions, answers = [split.questions[i] for i in items], [split.answers[i] for i in items]
        elif self.task == "qa":
            questions = [split.questions[i][j] for i, j in pairs]
            answers = [split.answers[i][j] for i, j in pairs]
        else:
            questions, answers = [""] * len(pairs), [split.captions[i] for i in items]
        batch = make_batch(self.tokenizer, self.ids, questions, answers, split.images[items],
                           image_tokens=self.image_slots, voco_tokens=self.voco_tokens)
        if split.features is not None:
            batch.features, batch.pixels = split.features[items], None
        return batch

    def _loader(self, name: str, train: bool) -> DataLoader:
        self.setup()
        split = self.splits[name]
        dataset = ExampleDataset(split, self.task, self.turns and train)  # evaluation: one question at a time
        sampler = None
        if train and len(dataset) < self.batch_size:
            raise ValueError(f"data: {len(dataset)} training examples cannot fill one batch of "
                             f"{self.batch_size}; lower batch_size or use more training scenes")
        if train:
            sampler = self._sampler = ResumableSampler(len(dataset), self.seed)
            sampler.resume_at(self._resume_step, self.batch_size)
        return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler, drop_last=train,
                          collate_fn=lambda pairs: self.collate(split, pairs))

    # -- resuming: the checkpoint records how far training got ---------------------------
    def state_dict(self) -> dict:
        return {"global_step": self.trainer.global_step if self.trainer is not None else 0}

    def load_state_dict(self, state: dict) -> None:
        self._resume_step = int(state.get("global_step", 0))
        if self._sampler is not None:
            self._sampler.resume_at(self._resume_step, self.batch_size)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("heldout", train=False)
