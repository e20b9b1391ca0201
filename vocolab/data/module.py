"""One `LightningDataModule` for every stage.

A stage differs only in what a sample is:

* `clip`:    (image, caption) pairs for the contrastive CLIP stage;
* `caption`: `[BOS][IMG][VOCO][caption][EOS]`, the pretrain (alignment) stage;
* `qa`:      `[BOS][IMG][VOCO][question][answer][EOS]`, one sample per question, or
             with `turns=True` every question of an image in one sequence (training:
             the image prefix is paid once for all its questions).

The splits live in memory (`data.split.Split`); frozen CLIP features can be computed
once for every image (`attach_features`), LLaVA-style, after which batches carry
features instead of pixels and the vision tower leaves the training step (the biggest
CPU speed-up there is). Training order comes from `data.sampler.ResumableSampler`, so a
resumed run trains on exactly the batches it had not seen.
"""

from __future__ import annotations

from functools import partial

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from vocolab.core.config import Config
from vocolab.core.presets import resolve_config
from vocolab.data.batching import Batch, make_batch
from vocolab.data.sampler import ResumableSampler
from vocolab.data.split import Split, vision_fingerprint
from vocolab.data.tokenizer import build_tokenizer, special_ids

TASKS = ("clip", "caption", "qa")


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
                 train_n: int | None = None, heldout_n: int | None = None, val_n: int | None = None,
                 voco_tokens: int | None = None,
                 seed: int | None = None, turns: bool = False, progress: bool = True, tokenizer=None):
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"task {task!r} is not one of {TASKS}")
        if kind not in ("scenes", "clips"):
            raise ValueError(f"kind {kind!r} is not 'scenes' or 'clips'")
        cfg = resolve_config(cfg, preset, overrides)
        self.cfg, self.task, self.kind = cfg, task, kind
        self.batch_size = batch_size or cfg.train.batch_size
        self.sizes = {"train": train_n, "heldout": heldout_n, "val": val_n}
        self.voco_tokens = cfg.voco.tokens if voco_tokens is None else voco_tokens  # an int, or Ks to draw from
        self.image_slots = cfg.image_slots  # V, or K for a model with a zoo compressor
        self.seed = cfg.seed if seed is None else seed
        self.turns = turns  # training batches hold all questions of an image per sequence
        self.progress = progress
        self.tokenizer = build_tokenizer(cfg.data) if tokenizer is None else tokenizer  # one per run
        self.ids = special_ids(self.tokenizer)
        self.splits: dict[str, Split] = {}
        self._sampler: ResumableSampler | None = None
        self._encoder = None
        self._resume_step = 0

    def setup(self, stage: str | None = None) -> None:
        for name in ("train", "heldout"):
            self.split(name)

    def split(self, name: str) -> Split:
        """The split `name` ("train", "val" or "heldout"), loaded on first use (with the
        frozen features the other splits carry, if any)."""
        if name not in self.splits:
            self.splits[name] = Split.load(self.cfg, self.kind, name, self.sizes[name], self.progress)
            if self._encoder is not None:
                self.attach_features(self._encoder[0], self._encoder[2])
        return self.splits[name]

    def attach_features(self, encode, batch_size: int = 256) -> None:
        """Precompute frozen features for every image with `encode` (a `VoCoVLM.encode_images`);
        recomputed only when the vision tower's weights differ from the last call's."""
        self.setup()
        owner = getattr(encode, "__self__", None)
        key = (f"{vision_fingerprint(owner.vision)}|layers={owner.vision_layers}" if owner is not None
               else repr(encode))
        self._encoder = (encode, key, batch_size)  # a split loaded later gets the same features
        for split in self.splits.values():
            if split.features is not None and split.features_of == key:
                continue
            chunks = []
            with torch.no_grad():
                for start in range(0, len(split.images), batch_size):
                    chunk = torch.from_numpy(split.images[start : start + batch_size])
                    features = encode(chunk)
                    # on a GPU the features stay there, in bf16 (what the projector reads under
                    # autocast): no copy from the host at any step; on a CPU, fp32 in memory
                    chunks.append(features.to(torch.bfloat16) if features.is_cuda else features.float().cpu())
            split.features, split.features_of = torch.cat(chunks), key

    def set_task(self, task: str, voco_tokens: int | tuple[int, ...] | None = None,
                 image_slots: int | None = None) -> "VoCoDataModule":
        """Reuse loaded data (and cached features) for another stage; `image_slots` is the
        number of sequence slots per image (K for a model with a zoo compressor).

        `voco_tokens` as a tuple of Ks: each batch draws its K from them (`batch_voco_tokens`),
        so one VoCo model learns every K, a curriculum over K instead of one model per K."""
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
    def batch_voco_tokens(self, items: list[int]) -> int:
        """The K of the batch of images `items`: `voco_tokens`, or with a tuple of Ks one of
        them drawn from the seed and the batch's items, so a resumed run draws the same."""
        if isinstance(self.voco_tokens, int):
            return self.voco_tokens
        rng = np.random.default_rng([self.seed, len(items), *items[:4]])
        return int(self.voco_tokens[rng.integers(len(self.voco_tokens))])

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
        cached = split.features is not None  # frozen CLIP features replace the pixels: none are drawn
        batch = make_batch(self.tokenizer, self.ids, questions, answers, None if cached else split.images[items],
                           image_tokens=self.image_slots, voco_tokens=self.batch_voco_tokens(items),
                           frames=split.frames if cached else None)
        if cached:
            batch.features = split.features[items]
        if self.task == "qa" and pairs[0][1] < 0 and split is self.splits.get("train"):  # one sequence per item
            batch.items = tuple(map(int, items))
        return batch

    def _world(self) -> tuple[int, int]:
        """(this process's rank, number of processes) of the trainer using the data."""
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def per_process_batch(self) -> int:
        """`batch_size` is the global batch; each of the trainer's processes loads its share."""
        _, world = self._world()
        if self.batch_size % world:
            raise ValueError(f"data: a global batch of {self.batch_size} does not split over {world} processes")
        return self.batch_size // world

    def _loader(self, name: str, train: bool) -> DataLoader:
        self.setup()
        split = self.split(name)
        dataset = ExampleDataset(split, self.task, self.turns and train)  # evaluation: one question at a time
        batch, sampler = self.per_process_batch(), None
        if train and len(dataset) < self.batch_size:
            raise ValueError(f"data: {len(dataset)} training examples cannot fill one batch of "
                             f"{self.batch_size}; lower batch_size or use more training scenes")
        if train:
            rank, world = self._world()
            sampler = self._sampler = ResumableSampler(len(dataset), self.seed, rank, world, batch)
            sampler.resume_at(self._resume_step, batch)
        pin = torch.cuda.is_available()  # page-locked host memory: faster copies to the GPU
        return DataLoader(dataset, batch_size=batch, sampler=sampler, drop_last=train, pin_memory=pin,
                          collate_fn=partial(self.collate, split))

    # -- resuming: the checkpoint records how far training got ---------------------------
    def state_dict(self) -> dict:
        return {"global_step": self.trainer.global_step if self.trainer is not None else 0}

    def load_state_dict(self, state: dict) -> None:
        self._resume_step = int(state.get("global_step", 0))
        if self._sampler is not None:
            self._sampler.resume_at(self._resume_step, self.per_process_batch())

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)  # the validation split: never the held-out one
