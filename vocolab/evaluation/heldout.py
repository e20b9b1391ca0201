"""Held-out evaluation: greedy answers, exact match per family, bounds and retention.

Every run answers the same held-out questions (a split generated from another seed
than training; docs/architecture.md, evaluation protocol):

* models whose text sees the image tokens (`causal`) decode with full forwards
  (`inference.generate.greedy_generate`);
* models evaluated under the `voco` mask answer from a `VoCoCache`: each image is
  compressed once and all its questions are answered against the cache, which is
  exactly how VoCo-LLaMA is used (and tested equal to the full masked forward);
* `blind` answers from the question alone (majority answer per question template,
  fit on the training split): what language priors alone achieve.

retention = (acc - lower) / (upper - lower), with both bounds from the same run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from vocolab.core.runtime import device as runtime_device
from vocolab.data.scenes import QA
from vocolab.data.split import Split
from vocolab.evaluation.baselines import BlindAnswerer
from vocolab.evaluation.confusion import answer_confusion
from vocolab.evaluation.metrics import FamilyExactMatch, retention
from vocolab.inference.answering import answer
from vocolab.inference.compression import compress
from vocolab.inference.generate import greedy_generate
from vocolab.models.inputs import model_device

MAX_NEW_TOKENS = 3  # one-word answers + EOS; a longer answer is simply wrong


@dataclass
class Questions:
    """Held-out questions flattened, each pointing at its image."""

    item: np.ndarray  # image index per question
    questions: list[str]
    answers: list[str]
    families: list[str]

    @classmethod
    def of(cls, split: Split, limit: int | None = None) -> "Questions":
        pairs = [(i, j) for i, qs in enumerate(split.questions) for j in range(len(qs))][:limit]
        return cls(np.array([i for i, _ in pairs]), [split.questions[i][j] for i, j in pairs],
                   [split.answers[i][j] for i, j in pairs], [split.families[i][j] for i, j in pairs])

    def __len__(self) -> int:
        return len(self.questions)


@torch.no_grad()
def predict(model, tokenizer, images: np.ndarray, qs: Questions, mask: str, k: int,
            batch_images: int = 64, progress: bool = True, desc: str = "eval") -> list[str]:
    """Greedy answers (decoded text) to every question, `batch_images` images at a time, on the
    runtime's device when it comes on the CPU, as `Trainer.fit` hands it back and `load_model`
    loads it (one placed elsewhere on purpose stays there). On the H200 the recipe's validation
    checks and `vocolab eval` otherwise answered on its CPU: ~11 s per 64 `small` images, the
    1,000-image held-out split over 3 minutes per run."""
    if model_device(model).type == "cpu":
        model.to(runtime_device())
    model.eval()
    device = model_device(model)
    preds: list[str] = [""] * len(qs)
    items = np.unique(qs.item)
    for start in tqdm(range(0, len(items), batch_images), desc=desc, disable=not progress, leave=False):
        chunk = items[start : start + batch_images]
        rows = np.nonzero(np.isin(qs.item, chunk))[0]
        q_ids = [tokenizer(qs.questions[r], add_special_tokens=False)["input_ids"] for r in rows]
        pixels = torch.from_numpy(images[chunk]).to(device)
        local = {item: i for i, item in enumerate(chunk.tolist())}
        of_row = [local[int(qs.item[r])] for r in rows]  # each question's image within the chunk
        if mask == "voco" and k > 0:
            cache = compress(model, pixels, k).select(of_row)  # one compression per image
            out = answer(model, cache, q_ids, MAX_NEW_TOKENS)
        else:
            features = model.encode_images(pixels)[of_row]  # one vision pass per image
            out = greedy_generate(model, model.special, q_ids, features=features, mode=mask,
                                  max_new_tokens=MAX_NEW_TOKENS, voco_tokens=k)
        for r, tokens in zip(rows, out):
            preds[r] = tokenizer.decode(tokens, skip_special_tokens=True)
    return preds


def score(preds: list[str], qs: Questions, families) -> dict:
    metric = FamilyExactMatch(families)
    metric.update(preds, qs.answers, qs.families)
    return metric.compute()


def model_run(model, tokenizer, split: Split, qs: Questions, families, *, name: str, method: str,
              mask: str, k: int, progress: bool = True, confusion: Sequence[str] = ()) -> dict:
    """One results-file run: the model's held-out accuracy under `mask` with K VoCo tokens,
    and for each family of `confusion` which answers it gave (`evaluation.confusion`)."""
    preds = predict(model, tokenizer, split.images, qs, mask, k, progress=progress, desc=name)
    tokens = k if mask == "voco" and k > 0 else model.cfg.image_slots
    run = {"name": name, "method": method, "tokens": tokens, "mask": mask} | score(preds, qs, families)
    if confusion:
        run["confusion"] = {f: answer_confusion(preds, qs.answers, qs.families, f) for f in confusion}
    return run


def blind_run(train: Split, qs: Questions, families) -> dict:
    """Majority answer per question template, fit on the training questions."""
    train_qas = [QA(*fields) for row in zip(train.questions, train.answers, train.families, train.templates)
                 for fields in zip(*row)]
    blind = BlindAnswerer(key="template").fit(train_qas)
    preds = [blind.predict(q) for q in qs.questions]
    return {"name": "blind", "method": "blind", "tokens": 0} | score(preds, qs, families)


def add_retention(runs: list[dict], upper: str = "upper", lower: str = "lower") -> list[dict]:
    """Set `retention` on every compressed run from the upper and lower bounds of the same run."""
    by_name = {r["name"]: r for r in runs}
    hi, lo = by_name[upper], by_name[lower]
    for run in runs:
        if run["name"] not in (upper, "blind"):
            run["retention"] = retention(run["accuracy"], lo["accuracy"], hi["accuracy"])
            run["per_family_retention"] = {
                f: retention(acc, lo["per_family"].get(f, 0.0), hi["per_family"].get(f, 0.0))
                for f, acc in run["per_family"].items()}
    return runs


def bound_runs(upper, tokenizer, train: Split, heldout: Split, qs: Questions, families, k_lower: int,
               progress: bool = True, confusion: Sequence[str] = ()) -> list[dict]:
    """The reference runs every table needs: upper (all image tokens, causal), lower (the
    upper-bound model under the `voco` mask with `k_lower` VoCo tokens) and blind."""
    return [
        model_run(upper, tokenizer, heldout, qs, families, name="upper", method="full", mask="causal",
                  k=upper.cfg.voco.tokens, progress=progress, confusion=confusion),
        model_run(upper, tokenizer, heldout, qs, families, name="lower", method="voco", mask="voco",
                  k=k_lower, progress=progress, confusion=confusion),
        blind_run(train, qs, families),
    ]


def standard_runs(upper, voco_models: dict[str, object], tokenizer, train: Split, heldout: Split,
                  families, limit: int | None = None, progress: bool = True,
                  confusion: Sequence[str] = ()) -> tuple[list[dict], Questions]:
    """Table 1 in miniature: upper, lower, blind and every VoCo model, same questions."""
    qs = Questions.of(heldout, limit)
    k_lower = min((m.cfg.voco.tokens for m in voco_models.values()), default=upper.cfg.voco.tokens)
    runs = bound_runs(upper, tokenizer, train, heldout, qs, families, k_lower, progress, confusion)
    for name, model in voco_models.items():
        runs.append(model_run(model, tokenizer, heldout, qs, families, name=name, method="voco", mask="voco",
                              k=model.cfg.voco.tokens, progress=progress, confusion=confusion))
    return add_retention(runs), qs
