"""The trained models the repository ships, so a notebook shows a trained model in seconds.

Training the nano recipe takes about twenty minutes on a laptop CPU; a student who opens
notebook 04 should not meet a model that answers "yes" to "what color is the diamond ?".
So `trained/<preset>/<name>/` keeps trained models of the recipe (meta.json says which run), one
`models.checkpoint` folder each, in float16 (half the bytes; `load_shipped` casts every
weight back to float32, so a CPU computes as it did in training):

    upper   the upper bound: every image token (the quickstart's upper stage)
    voco    VoCo, K = voco.tokens (the quickstart's voco stage)
    video   temporal tuning: K VoCo tokens per frame (`vocolab temporal`)
    mod     mixture-of-depths with learned routers on clips (`vocolab mod`); its routers
            in `routers.safetensors`, its `MoDConfig` in meta.json

Each carries its own (frozen) vision tower. meta.json also
records `trained_by` (the provenance of the run that trained the model), `shipped_by`
(that of `vocolab ship`) and `check`: the accuracy the *shipped* weights reach on the
first held-out items, which `tests/test_shipped.py` recomputes from a clean checkout.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model

from vocolab.core.config import Config
from vocolab.models.checkpoint import META, load_checkpoint, save_checkpoint

SHIPPED_ROOT = Path(__file__).resolve().parents[1] / "trained"
ROUTERS = "routers.safetensors"


@dataclass(frozen=True)
class ShippedModel:
    """What a shipped model is evaluated on: its data kind and mask (`evaluation.heldout`)."""

    kind: str  # "scenes" or "clips"
    mask: str  # "causal", "voco" or "video"
    what: str


MODELS = {
    "upper": ShippedModel("scenes", "causal", "upper bound, every image token"),
    "voco": ShippedModel("scenes", "voco", "VoCo, K tokens per image"),
    "video": ShippedModel("clips", "video", "temporal tuning, K VoCo tokens per frame"),
    "mod": ShippedModel("clips", "causal", "mixture-of-depths, learned routers"),
}
CHECK_ITEMS = {"scenes": 40, "clips": 30}  # held-out items whose questions the check answers


def shipped_folder(name: str, preset: str = "nano", root: str | Path | None = None) -> Path:
    if name not in MODELS:
        raise ValueError(f"no shipped model called {name!r}; choose from {sorted(MODELS)}")
    return Path(root or SHIPPED_ROOT) / preset / name


def is_shipped(name: str, preset: str = "nano", root: str | Path | None = None) -> bool:
    return (shipped_folder(name, preset, root) / META).is_file()


def load_trained(folder: str | Path, map_location="cpu"):
    """`(model, cfg, meta)` from a folder `save_trained` wrote, in float32: a `VoCoVLM`, or
    a `MoDVLM` when meta.json carries a `MoDConfig` ("mod")."""
    folder = Path(folder)
    model, cfg, meta = load_checkpoint(folder, dtype=torch.float32)
    if "mod" in meta:
        from vocolab.zoo.mod import MoDVLM
        from vocolab.zoo.mod_config import MoDConfig

        model = MoDVLM(model, config=MoDConfig(**meta["mod"]))  # routers built in float32
        try:
            load_model(model.routers, str(folder / ROUTERS), strict=True)
        except Exception as err:
            raise ValueError(f"load_trained: {folder / ROUTERS} is missing or does not fit: {err}") from err
    return model.to(map_location).eval(), cfg, meta


def save_trained(model, cfg: Config, folder: str | Path, metadata: dict | None = None, *, half: bool = False) -> Path:
    """Save a `VoCoVLM` or a `MoDVLM` (its wrapped model, plus routers and `MoDConfig`) to
    `folder`, in float16 when `half`; the caller's model is left as it was."""
    import copy

    folder, metadata = Path(folder), dict(metadata or {})
    if half:
        model = copy.deepcopy(model).cpu().half()
    if hasattr(model, "routers") and hasattr(model, "vlm"):  # a MoDVLM
        save_checkpoint(model.vlm, cfg, folder, metadata | {"mod": model.config.to_dict()})
        save_model(model.routers, str(folder / ROUTERS))
    else:
        save_checkpoint(model, cfg, folder, metadata)
    return folder


def load_shipped(name: str, preset: str = "nano", root: str | Path | None = None, map_location="cpu"):
    """`(model, cfg, meta)` of a shipped model in float32 (a `MoDVLM` for "mod"). A missing
    model is a ValueError that says how to make it."""
    folder = shipped_folder(name, preset, root)
    if not (folder / META).is_file():
        raise ValueError(f"no shipped {preset} model {name!r} in {folder}: `make models` trains and ships them")
    return load_trained(folder, map_location)


def check_accuracy(name: str, model, cfg: Config, progress: bool = False) -> dict:
    """Accuracy of `model` on the questions of the first `CHECK_ITEMS` held-out items, the
    way its study scores it; deterministic on a CPU, so a shipped model must reproduce it."""
    from vocolab.data.split import Split
    from vocolab.data.tokenizer import build_tokenizer
    from vocolab.evaluation.clips import clip_families, clip_run
    from vocolab.evaluation.heldout import Questions, model_run

    spec = MODELS[name]
    split = Split.load(cfg, spec.kind, "heldout", n=CHECK_ITEMS[spec.kind], progress=progress)
    tok, qs = build_tokenizer(cfg.data), Questions.of(split)
    k = cfg.voco.tokens
    if spec.kind == "scenes":
        from vocolab.data.scenes import FAMILIES

        run = model_run(model, tok, split, qs, FAMILIES, name=name, method=name, mask=spec.mask, k=k,
                        progress=progress)
    elif spec.mask == "video":
        run = clip_run(model, tok, split.images, qs, clip_families(split), name=name, method=name, mask="video",
                       k=k, tokens=k, curve=False, progress=progress)
    else:
        run = model_run(model, tok, split, qs, clip_families(split), name=name, method=name, mask=spec.mask, k=k,
                        progress=progress)
    return {"split": "heldout", "kind": spec.kind, "items": CHECK_ITEMS[spec.kind], "questions": len(qs),
            "mask": spec.mask, "k": k, "accuracy": run["accuracy"], "per_family": run["per_family"]}


__all__ = ["CHECK_ITEMS", "MODELS", "SHIPPED_ROOT", "check_accuracy", "is_shipped", "load_shipped", "load_trained",
           "save_trained", "shipped_folder"]
