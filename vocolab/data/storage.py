"""Generate the scene and clip datasets once, cache them on disk, reload them fast.

A cached split lives in `<root>/data/<kind>-<split>-<key>/`, where `key` hashes
every config field that changes the data plus `GENERATOR_VERSION` (bump it when
the generator changes). The folder holds `config.json` (what was hashed),
`dataset/` (`Dataset.save_to_disk`) and `checksum.json` (the sha256 of every file
under `dataset/`). A folder is reused only if its config.json matches, its files
still have their checksums and it loads with the expected length and features;
anything else is rebuilt, never silently reused. Builds go to a temporary folder that is renamed
into place at the end, so an interrupted build never looks finished.

Item i of a split is drawn from its own generator `default_rng([seed, kind, i])`,
so a smaller `n` gives a prefix of the full split and runs are reproducible.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator

import datasets
import numpy as np
from tqdm.auto import tqdm

from vocolab.core.config import Config, DataConfig
from vocolab.data.clips import clip_caption, clip_frame_scene, clip_questions, render_clip, sample_clip
from vocolab.data.scenes import caption, extra_questions, jitter, render_scene, sample_scene, scene_questions
from vocolab.data.vocab import check_data_config

GENERATOR_VERSION = 1
SPLITS = ("train", "val", "heldout")
KINDS = {"scenes": 0, "clips": 1}  # the value seeds the kind's own random stream
# DataConfig fields that change what is generated (patch_size, for one, does not)
_AFFECTS = {
    "scenes": ("image_size", "grid", "min_objects", "max_objects", "shapes", "colors", "sizes",
               "questions_per_scene"),
    "clips": ("image_size", "grid", "min_objects", "max_objects", "shapes", "colors", "sizes",
              "questions_per_scene", "frames"),
}


# scene fields that change what is generated, hashed only when they differ from the default
_OPTIONAL = {"scenes": {"captions": "coarse", "train_extra_families": (), "train_jitter": 0.0, "storage": "arrays",
                        "train_min_objects": 0, "train_clip_frames": 0.0},
             "clips": {"storage": "arrays", "train_min_objects": 0}}


def cache_root(root: str | os.PathLike | None = None) -> Path:
    """`root`, else $VOCOLAB_CACHE, else ~/.cache/vocolab."""
    if root is not None:
        return Path(root)
    return Path(os.environ.get("VOCOLAB_CACHE") or Path.home() / ".cache" / "vocolab")


def _data_config(cfg: DataConfig | Config) -> DataConfig:
    cfg = cfg.data if isinstance(cfg, Config) else cfg
    if not isinstance(cfg, DataConfig):
        raise ValueError(f"expected a DataConfig (or Config), got {type(cfg).__name__}")
    check_data_config(cfg)
    return cfg


def split_seed(cfg: DataConfig, split: str) -> int:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return {"train": cfg.train_seed, "val": cfg.val_seed, "heldout": cfg.heldout_seed}[split]


def questions_per_item(cfg: DataConfig, split: str) -> int:
    """Questions generated per scene or clip of `split`."""
    split_seed(cfg, split)
    if split == "train" and cfg.train_questions_per_scene > 0:
        return cfg.train_questions_per_scene
    return cfg.questions_per_scene


def split_size(cfg: DataConfig, kind: str, split: str, n: int | None = None) -> int:
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int (or None for the full split), got {n!r}")
        return n
    split_seed(cfg, split)
    counts = {("scenes", "train"): cfg.train_scenes, ("scenes", "val"): cfg.val_scenes,
              ("scenes", "heldout"): cfg.heldout_scenes, ("clips", "train"): cfg.train_clips,
              ("clips", "val"): cfg.val_clips, ("clips", "heldout"): cfg.heldout_clips}
    return counts[(kind, split)]


def item_rng(seed: int, kind: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, KINDS[kind], index])


# -- rows ------------------------------------------------------------------------------


def _qa_columns(qas) -> dict[str, list[str]]:
    return {"question": [q.question for q in qas], "answer": [q.answer for q in qas],
            "family": [q.family for q in qas], "template": [q.template for q in qas]}


def _sampled_from(cfg: DataConfig, train: bool) -> DataConfig:
    """The config an item is drawn from: a training item's object count starts at
    `data.train_min_objects` when that is set; validation and held-out items keep `min_objects`."""
    return replace(cfg, min_objects=cfg.train_min_objects) if train and cfg.train_min_objects else cfg


def scene_row(cfg: DataConfig, seed: int, index: int, questions: int, render: bool = True,
              train: bool = False) -> dict[str, Any]:
    """One scene with its caption and questions. A training scene may also get the extra
    training families and a jittered drawing (`data.train_*`); those draw from a stream of
    their own, so the rest of the row is the same with or without them (a training scene
    with another object count, `data.train_min_objects`, is another scene; so is one drawn
    as a clip frame, `data.train_clip_frames`, from a stream of its own)."""
    rng = item_rng(seed, "scenes", index)
    scene = sample_scene(rng, _sampled_from(cfg, train))
    if train and cfg.train_clip_frames:  # its own stream, drawn only when asked for (a read draws every row)
        framed = np.random.default_rng([seed, KINDS["scenes"], index, 2])
        if framed.random() < cfg.train_clip_frames:
            scene = clip_frame_scene(framed, _sampled_from(cfg, train))
    qas = scene_questions(scene, rng, questions, cfg)
    extra = np.random.default_rng([seed, KINDS["scenes"], index, 1])
    if train and cfg.train_extra_families:
        qas = qas + extra_questions(scene, extra, cfg.train_extra_families, tuple(qas))
    row = {"caption": caption(scene, exact=cfg.captions == "exact"), **_qa_columns(qas), "objects": scene.to_json()}
    if render:
        offsets = jitter(scene, extra, cfg.train_jitter) if train and cfg.train_jitter else None
        row["image"] = render_scene(scene, cfg, rng, offsets)
    return row


def clip_row(cfg: DataConfig, seed: int, index: int, questions: int, render: bool = True,
             train: bool = False) -> dict[str, Any]:
    """One clip with its caption and questions; a training clip holds `data.train_min_objects`..
    max_objects objects when that is set (fewer distractors to learn "what moved" from), as a
    training scene does; validation and held-out clips never change."""
    rng = item_rng(seed, "clips", index)
    clip = sample_clip(rng, _sampled_from(cfg, train))
    row = {"caption": clip_caption(clip), **_qa_columns(clip_questions(clip, rng, questions)),
           "objects": clip.to_json()}
    if render:
        row["frames"] = render_clip(clip, cfg, rng)
    return row


_ROW_FNS: dict[str, Callable[..., dict[str, Any]]] = {"scenes": scene_row, "clips": clip_row}


def iter_rows(cfg: DataConfig | Config, kind: str, split: str, n: int | None = None,
              render: bool = True, progress: bool = False) -> Iterator[dict[str, Any]]:
    """The rows of a split without touching the disk (`render=False`: text only, fast)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {tuple(KINDS)}, got {kind!r}")
    cfg = _data_config(cfg)
    seed, count = split_seed(cfg, split), split_size(cfg, kind, split, n)
    questions = questions_per_item(cfg, split)
    for i in tqdm(range(count), desc=f"{kind}/{split}", disable=not progress, mininterval=0.5):
        yield _ROW_FNS[kind](cfg, seed, i, questions, render, train=split == "train")


def stores_pixels(cfg: DataConfig, split: str) -> bool:
    """Whether the cached split keeps its images. `storage = "render"` drops them from the
    training split only: it is the large one and training reads it through `Split`
    (`data.rendered` draws the pixels again); the small validation and held-out splits,
    the ones people look at, keep theirs."""
    return cfg.storage == "arrays" or split != "train"


def features(cfg: DataConfig, kind: str, split: str = "train") -> datasets.Features:
    s = cfg.image_size
    pixels = ({"image": datasets.Array3D((s, s, 3), "uint8")} if kind == "scenes"
              else {"frames": datasets.Array4D((cfg.frames, s, s, 3), "uint8")})
    if not stores_pixels(cfg, split):  # drawn when read (`data.rendered`): text and scenes only
        pixels = {}
    text = datasets.Sequence(datasets.Value("string"))
    return datasets.Features({**pixels, "caption": datasets.Value("string"), "question": text,
                              "answer": text, "family": text, "template": text,
                              "objects": datasets.Value("string")})


# -- cache -----------------------------------------------------------------------------


def cache_spec(cfg: DataConfig, kind: str, split: str, n: int | None = None) -> tuple[str, dict[str, Any]]:
    """(key, the JSON-normalised fields it hashes)."""
    spec = {f: getattr(cfg, f) for f in _AFFECTS[kind]}
    for name, default in _OPTIONAL.get(kind, {}).items():  # named only when set: old caches stay valid
        # storage changes a split only where its pixels are not stored (the training split)
        if getattr(cfg, name) != default and (name != "storage" or not stores_pixels(cfg, split)):
            spec[name] = getattr(cfg, name)
    spec["questions_per_scene"] = questions_per_item(cfg, split)  # a split's own count
    spec.update(kind=kind, split=split, seed=split_seed(cfg, split),
                count=split_size(cfg, kind, split, n), generator_version=GENERATOR_VERSION)
    text = json.dumps(spec, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12], json.loads(text)


def cache_dir(cfg: DataConfig | Config, kind: str, split: str, n: int | None = None,
              root: str | os.PathLike | None = None) -> Path:
    cfg = _data_config(cfg)
    key, _ = cache_spec(cfg, kind, split, n)
    return cache_root(root) / "data" / f"{kind}-{split}-{key}"


def content_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` (relative path -> hex): a damaged byte anywhere
    changes it, even when the file keeps its size."""
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                digest.update(chunk)
        out[str(path.relative_to(folder))] = digest.hexdigest()
    return out


def _try_load(folder: Path, spec: dict[str, Any], feats: datasets.Features) -> datasets.Dataset | None:
    """The cached dataset if it is complete, unchanged since it was written (checksums) and
    was built from `spec`, else None."""
    try:
        if json.loads((folder / "config.json").read_text()) != spec:
            return None
        if json.loads((folder / "checksum.json").read_text()) != content_digest(folder / "dataset"):
            return None
        ds = datasets.load_from_disk(str(folder / "dataset"))
        if len(ds) != spec["count"] or ds.features != feats:
            return None
        return ds
    except Exception:  # corrupt or half-deleted: the caller rebuilds
        return None


def _build(folder: Path, cfg: DataConfig, kind: str, split: str, n: int | None,
           spec: dict[str, Any], feats: datasets.Features, progress: bool) -> None:
    tmp = folder.parent / f".tmp-{folder.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # ours is the one that counts items
    try:
        ds = datasets.Dataset.from_generator(
            iter_rows, features=feats, cache_dir=str(tmp / "hf-cache"), fingerprint=folder.name,
            gen_kwargs=dict(cfg=cfg, kind=kind, split=split, n=n, progress=progress,
                            render=stores_pixels(cfg, split)))
        ds.save_to_disk(str(tmp / "dataset"))
        del ds
        shutil.rmtree(tmp / "hf-cache", ignore_errors=True)
        (tmp / "checksum.json").write_text(json.dumps(content_digest(tmp / "dataset"), indent=2) + "\n")
        (tmp / "config.json").write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")
        try:
            tmp.rename(folder)
        except OSError:  # another process finished the same build first: keep theirs
            pass
    finally:
        if bars:
            datasets.enable_progress_bars()
        shutil.rmtree(tmp, ignore_errors=True)


def load_split(cfg: DataConfig | Config, kind: str, split: str, root: str | os.PathLike | None = None,
               n: int | None = None, progress: bool = True) -> datasets.Dataset:
    """The cached split, (re)built first when missing, stale or corrupt."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {tuple(KINDS)}, got {kind!r}")
    cfg = _data_config(cfg)
    key, spec = cache_spec(cfg, kind, split, n)
    folder = cache_root(root) / "data" / f"{kind}-{split}-{key}"
    feats = features(cfg, kind, split)
    if folder.exists():
        ds = _try_load(folder, spec, feats)
        if ds is not None:
            return ds
        shutil.rmtree(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    _build(folder, cfg, kind, split, n, spec, feats, progress)
    ds = _try_load(folder, spec, feats)
    if ds is None:
        raise RuntimeError(f"load_split: {folder} failed to load right after building it")
    return ds


def load_scenes(cfg: DataConfig | Config, split: str, root: str | os.PathLike | None = None,
                n: int | None = None, progress: bool = True) -> datasets.Dataset:
    """Scenes of `split` ("train", "val" or "heldout"): one row per image with its questions."""
    return load_split(cfg, "scenes", split, root, n, progress)


def load_clips(cfg: DataConfig | Config, split: str, root: str | os.PathLike | None = None,
               n: int | None = None, progress: bool = True) -> datasets.Dataset:
    """Clips of `split` ("train", "val" or "heldout"): one row per clip, frames `[T, H, W, 3]`."""
    return load_split(cfg, "clips", split, root, n, progress)


def numpy_view(ds: datasets.Dataset) -> datasets.Dataset:
    """`ds` formatted as numpy with pixels kept uint8.

    A plain `with_format("numpy")` widens every integer array to int64 (8x the
    memory) in datasets 5; asking for uint8 keeps the stored type."""
    return ds.with_format("numpy", dtype=np.uint8)
