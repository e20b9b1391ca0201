"""Procedural scenes: coloured shapes on a lattice, their captions and questions.

A scene is a handful of objects (shape, colour, size) on distinct cells of a
`grid x grid` lattice. Everything the model is asked about is exact, because
the symbolic scene is kept next to the pixels. The question generator balances
its answers (it picks the answer first, then an object that has it), so that a
"blind" model that only reads the question cannot do much better than chance:
a benchmark with strong language priors would measure nothing.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Callable

import numpy as np

from vocolab.core.config import DataConfig
from vocolab.data.vocab import (
    HORIZONTAL_WORDS,
    PALETTE,
    SIZE_SCALE,
    TRAINING_FAMILIES,
    VERTICAL_WORDS,
    check_data_config,
    number_word,
    plural,
)

FAMILIES = ("color", "shape", "count", "exist", "spatial")
BACKGROUND = (18, 18, 28)
NOISE = 6  # +- grey levels of per-pixel noise when an rng is given


@dataclass(frozen=True)
class Obj:
    """One object; `row`/`col` are lattice coordinates (floats in clip frames)."""

    shape: str
    color: str
    size: str
    row: float
    col: float


@dataclass(frozen=True)
class Scene:
    """What is in one image. `grid` is the lattice the positions refer to."""

    objects: tuple[Obj, ...]
    grid: int = 4

    def to_json(self) -> str:
        return json.dumps({"grid": self.grid, "objects": [asdict(o) for o in self.objects]})

    @classmethod
    def from_json(cls, text: str) -> "Scene":
        tree = json.loads(text)
        return cls(tuple(Obj(**o) for o in tree["objects"]), grid=tree["grid"])


@dataclass(frozen=True)
class QA:
    question: str
    answer: str  # always exactly one word
    family: str
    template: str  # the question with its slots unfilled: what a blind model can key on


# -- sampling --------------------------------------------------------------------------


def sample_scene(rng: np.random.Generator, cfg: DataConfig) -> Scene:
    """min_objects..max_objects objects on distinct cells, attributes uniform."""
    check_data_config(cfg)
    n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    cells = np.sort(rng.choice(cfg.grid * cfg.grid, size=n, replace=False))  # row-major
    objects = tuple(
        Obj(shape=cfg.shapes[rng.integers(len(cfg.shapes))],
            color=cfg.colors[rng.integers(len(cfg.colors))],
            size=cfg.sizes[rng.integers(len(cfg.sizes))],
            row=int(c // cfg.grid), col=int(c % cfg.grid))
        for c in cells)
    return Scene(objects, grid=cfg.grid)


# -- rendering -------------------------------------------------------------------------


@lru_cache(maxsize=512)
def shape_mask(shape: str, radius: float) -> np.ndarray:
    """Boolean `[w, w]` stamp of a shape of the given radius (pixels), centred at w/2.

    Stamps are cached per (shape, radius), so rendering a scene is a few slice
    assignments; that is what makes thousands of images per second possible.
    """
    w = int(np.ceil(2 * radius)) + 2
    y, x = np.mgrid[0:w, 0:w].astype(np.float32)
    u = (x + 0.5 - w / 2) / radius
    v = (y + 0.5 - w / 2) / radius  # v grows downwards
    au, av = np.abs(u), np.abs(v)
    if shape == "circle":
        m = u * u + v * v <= 1.0
    elif shape == "square":
        m = np.maximum(au, av) <= 0.8
    elif shape == "triangle":  # apex up
        m = (v <= 0.8) & (au <= 0.55 * (v + 0.95))
    elif shape == "diamond":
        m = au + av <= 1.0
    elif shape == "cross":
        m = ((au <= 0.3) & (av <= 0.95)) | ((av <= 0.3) & (au <= 0.95))
    elif shape == "ring":
        r2 = u * u + v * v
        m = (r2 <= 1.0) & (r2 >= 0.5**2)
    elif shape == "star":  # five points: radius moves linearly between 0.45 and 1
        r = np.sqrt(u * u + v * v)
        phase = (np.arctan2(u, -v) / (2 * np.pi / 5)) % 1.0
        m = r <= 0.45 + 0.55 * np.abs(1 - 2 * phase)
    elif shape == "hexagon":
        m = (av <= 0.866) & (0.866 * au + 0.5 * av <= 0.866)
    else:
        raise ValueError(f"shape_mask: cannot draw shape {shape!r}")
    m.flags.writeable = False
    return m


def new_canvas(size: int, rng: np.random.Generator | None = None) -> np.ndarray:
    img = np.empty((size, size, 3), np.uint8)
    img[:] = BACKGROUND
    if rng is not None:
        noise = rng.integers(-NOISE, NOISE + 1, size=(size, size, 1), dtype=np.int16)
        img = (img.astype(np.int16) + noise).clip(0, 255).astype(np.uint8)
    return img


def paint(img: np.ndarray, obj: Obj, cell: float) -> None:
    """Stamp one object in place; centres may be fractional (moving objects)."""
    if obj.color not in PALETTE:
        raise ValueError(f"paint: unknown colour {obj.color!r}")
    if obj.size not in SIZE_SCALE:
        raise ValueError(f"paint: unknown size {obj.size!r}")
    mask = shape_mask(obj.shape, round(SIZE_SCALE[obj.size] * cell, 3))
    w = mask.shape[0]
    top = int(round((obj.row + 0.5) * cell - w / 2))
    left = int(round((obj.col + 0.5) * cell - w / 2))
    size = img.shape[0]
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + w, size), min(left + w, size)
    if y0 >= y1 or x0 >= x1:
        return
    m = mask[y0 - top: y1 - top, x0 - left: x1 - left]
    img[y0:y1, x0:x1][m] = PALETTE[obj.color]


def render_scene(scene: Scene, cfg: DataConfig, rng: np.random.Generator | None = None,
                 offsets: np.ndarray | None = None) -> np.ndarray:
    """`uint8 [H, W, 3]` image; slight per-pixel noise when `rng` is given. `offsets`
    `[objects, 2]` (in cells) draw each object that far from its lattice cell."""
    if scene.grid != cfg.grid:
        raise ValueError(f"render_scene: scene is on a {scene.grid}-grid but cfg.grid is {cfg.grid}")
    img = new_canvas(cfg.image_size, rng)
    cell = cfg.image_size / cfg.grid
    for i, obj in enumerate(scene.objects):
        if offsets is not None:
            obj = Obj(obj.shape, obj.color, obj.size, obj.row + float(offsets[i, 0]), obj.col + float(offsets[i, 1]))
        paint(img, obj, cell)
    return img


def jitter(scene: Scene, rng: np.random.Generator, amount: float) -> np.ndarray:
    """`[objects, 2]` offsets uniform in [-amount, amount] cells (rows, columns)."""
    return rng.uniform(-amount, amount, size=(len(scene.objects), 2))


# -- captions --------------------------------------------------------------------------


def position_words(row: float, col: float, grid: int) -> str:
    """Coarse 3x3 position ("top left", "center", "bottom center", ...)."""
    vb = min(2, max(0, int(3 * (row + 0.5) / grid)))
    hb = min(2, max(0, int(3 * (col + 0.5) / grid)))
    if vb == 1 and hb == 1:
        return "center"
    return f"{VERTICAL_WORDS[vb]} {HORIZONTAL_WORDS[hb]}"


def caption(scene: Scene, exact: bool = False) -> str:
    """Every object, row-major: "a large red circle top left , a small blue square ..."; with
    `exact`, its lattice row and column instead: "a large red circle in row one column one , ..."."""
    objects = sorted(scene.objects, key=lambda o: (o.row, o.col))

    def where(o: Obj) -> str:
        if exact:
            return f"in row {number_word(round(o.row) + 1)} column {number_word(round(o.col) + 1)}"
        return position_words(o.row, o.col, scene.grid)

    return " , ".join(f"a {o.size} {o.color} {o.shape} {where(o)}" for o in objects)


# -- questions -------------------------------------------------------------------------


def pick(rng: np.random.Generator, items: list):
    return items[int(rng.integers(len(items)))]


def pick_balanced(rng: np.random.Generator, by_answer: dict[str, list]):
    """Answer first (uniform over the answers this scene can give), then a candidate:
    this is what keeps every answer distribution flat."""
    answers = sorted(a for a, cands in by_answer.items() if cands)
    if not answers:
        return None
    answer = pick(rng, answers)
    return answer, pick(rng, by_answer[answer])


def _attribute_q(scene, rng, asked, named_by: str, asked_for: str, template: str) -> QA | None:
    """Ask for `asked_for` of the object identified by its `named_by` attribute (which must
    be unique in the scene), balancing the answers."""
    counts = Counter(getattr(o, named_by) for o in scene.objects)
    by_answer: dict[str, list] = {}
    for o in scene.objects:
        q = template.format(**{named_by: getattr(o, named_by)})
        if counts[getattr(o, named_by)] == 1 and q not in asked:
            by_answer.setdefault(getattr(o, asked_for), []).append(q)
    got = pick_balanced(rng, by_answer)
    return got and QA(got[1], got[0], asked_for, template)


def _color_q(scene, rng, cfg, asked):
    return _attribute_q(scene, rng, asked, "shape", "color", "what color is the {shape} ?")


def _shape_q(scene, rng, cfg, asked):
    return _attribute_q(scene, rng, asked, "color", "shape", "what shape is the {color} object ?")


def _count_q(scene, rng, cfg, asked):
    colors = Counter(o.color for o in scene.objects)
    shapes = Counter(o.shape for o in scene.objects)
    kinds = {
        "how many {color} objects are there ?":
            {f"how many {c} objects are there ?": colors[c] for c in cfg.colors},
        "how many {shapes} are there ?":
            {f"how many {plural(s)} are there ?": shapes[s] for s in cfg.shapes},
        "how many objects are there ?": {"how many objects are there ?": len(scene.objects)},
    }
    options = [t for t, qs in kinds.items() if any(q not in asked for q in qs)]
    if not options:
        return None
    template = pick(rng, options)
    by_answer: dict[str, list] = {}
    for q, n in kinds[template].items():
        if q not in asked:
            by_answer.setdefault(number_word(n), []).append(q)
    answer, q = pick_balanced(rng, by_answer)
    return QA(q, answer, "count", template)


def _exist_q(scene, rng, cfg, asked):
    present = {(o.color, o.shape) for o in scene.objects}
    colors, shapes = {c for c, _ in present}, {s for _, s in present}
    yes, hard, easy = [], [], []
    for c in cfg.colors:
        for s in cfg.shapes:
            q = f"is there a {c} {s} ?"
            if q in asked:
                continue
            if (c, s) in present:
                yes.append(q)
            elif c in colors or s in shapes:
                hard.append(q)  # right colour or right shape, not together: needs binding
            else:
                easy.append(q)
    no = hard if hard and (not easy or rng.random() < 0.5) else easy
    got = pick_balanced(rng, {"yes": yes, "no": no})
    return got and QA(got[1], got[0], "exist", "is there a {color} {shape} ?")


def spatial_relation(a: Obj, b: Obj) -> str | None:
    """Where `a` is relative to `b`, only when they share a row or a column."""
    if a.row == b.row and a.col != b.col:
        return "left" if a.col < b.col else "right"
    if a.col == b.col and a.row != b.row:
        return "above" if a.row < b.row else "below"
    return None


def related_pairs(scene: Scene):
    """(a, b, relation) for every ordered pair of objects, each named by a colour and shape
    no other object has, that share a row or a column: what `spatial` can ask about."""
    keys = Counter((o.color, o.shape) for o in scene.objects)
    named = [o for o in scene.objects if keys[(o.color, o.shape)] == 1]
    return [(a, b, rel) for a in named for b in named if a is not b and (rel := spatial_relation(a, b))]


def _spatial_q(scene, rng, cfg, asked):
    by_answer: dict[str, list] = {}
    for a, b, rel in related_pairs(scene):
        q = f"where is the {a.color} {a.shape} relative to the {b.color} {b.shape} ?"
        if q not in asked:
            by_answer.setdefault(rel, []).append(q)
    got = pick_balanced(rng, by_answer)
    return got and QA(got[1], got[0], "spatial",
                      "where is the {color} {shape} relative to the {color} {shape} ?")


def _position_q(scene, rng, axis: str) -> QA | None:
    """In which row (or column) an object named by colour and shape is: one localisation
    skill the `spatial` family composes, asked about training scenes only."""
    keys = Counter((o.color, o.shape) for o in scene.objects)
    by_answer: dict[str, list] = {}
    for o in scene.objects:
        if keys[(o.color, o.shape)] == 1:
            index = round(o.row if axis == "row" else o.col)  # a clip frame's: the nearest
            by_answer.setdefault(number_word(index + 1), []).append(
                f"which {axis} is the {o.color} {o.shape} in ?")
    got = pick_balanced(rng, by_answer)
    return got and QA(got[1], got[0], axis, f"which {axis} is the {{color}} {{shape}} in ?")


def _axis_q(scene, rng) -> QA | None:
    """Whether two objects named by colour and shape share a row or a column: the axis half
    of a `spatial` answer (left/right or above/below) without its order, asked of the pairs
    that `spatial` asks about."""
    by_answer: dict[str, list] = {}
    for a, b, rel in related_pairs(scene):
        by_answer.setdefault("row" if rel in ("left", "right") else "column", []).append(
            f"are the {a.color} {a.shape} and the {b.color} {b.shape} in one row or one column ?")
    got = pick_balanced(rng, by_answer)
    template = "are the {color} {shape} and the {color} {shape} in one row or one column ?"
    return got and QA(got[1], got[0], "axis", template)


_FAMILY_FNS: dict[str, Callable] = {"color": _color_q, "shape": _shape_q, "count": _count_q,
                                    "exist": _exist_q, "spatial": _spatial_q}


def extra_questions(scene: Scene, rng: np.random.Generator, families: tuple[str, ...],
                    asked: tuple[QA, ...] = ()) -> list[QA]:
    """One question per family of `families` (`TRAINING_FAMILIES`) about `scene`, where it can
    ask one that is not among `asked` (the scene's other questions)."""
    bad = [f for f in families if f not in TRAINING_FAMILIES]
    if bad:
        raise ValueError(f"extra_questions: unknown families {bad}; choose from {TRAINING_FAMILIES}")
    seen = {qa.question for qa in asked}

    def one(family: str) -> QA | None:
        if family == "spatial":
            return _spatial_q(scene, rng, None, seen)
        return _axis_q(scene, rng) if family == "axis" else _position_q(scene, rng, family)

    return [qa for f in families if (qa := one(f)) is not None]


def round_robin(ask: Callable[[str, set[str]], "QA | None"], families: tuple[str, ...],
                rng: np.random.Generator, n: int) -> list[QA]:
    """n questions spread evenly over families, starting at a random family.

    `ask(family, asked)` returns a question not in `asked`, or None. A family that
    cannot ask anything new hands its turn to the next one; only when no family
    can, a duplicate is allowed (so exactly n come back)."""
    if n < 0:
        raise ValueError(f"questions: n must be >= 0, got {n}")
    offset = int(rng.integers(len(families)))
    asked: set[str] = set()
    used = dict.fromkeys(families, 0)
    out: list[QA] = []
    for i in range(n):
        turn = [families[(offset + i + j) % len(families)] for j in range(len(families))]
        # the family whose turn it is first, then the least asked ones
        order = turn[:1] + sorted(turn[1:], key=lambda f: used[f])
        qa = next((q for seen in (asked, set()) for f in order if (q := ask(f, seen))), None)
        if qa is None:
            raise ValueError("questions: no family can ask anything about this input")
        asked.add(qa.question)
        used[qa.family] += 1
        out.append(qa)
    return out


def scene_questions(scene: Scene, rng: np.random.Generator, n: int,
                    cfg: DataConfig | None = None) -> list[QA]:
    """n questions about `scene` (see FAMILIES); answers are single words.

    `cfg` supplies the colours and shapes that may be *absent* (count zero, "is
    there ... ? no"); it defaults to `DataConfig()`, which must then cover the scene.
    """
    cfg = cfg or DataConfig()
    for o in scene.objects:
        if o.shape not in cfg.shapes or o.color not in cfg.colors:
            raise ValueError(f"scene_questions: {o.color} {o.shape} is outside cfg's shapes/colours; pass cfg")
    return round_robin(lambda fam, asked: _FAMILY_FNS[fam](scene, rng, cfg, asked), FAMILIES, rng, n)
