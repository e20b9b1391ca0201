"""Moving-object clips whose questions no single frame can answer.

Each object moves one cell in total over the clip, a fixed fraction of a cell per
frame, in one of four directions; it is visible during an interval of frames (it
may appear late or vanish early) and one object changes colour mid-clip.

Positions live on a fine lattice (the per-frame step), both coordinates uniform,
and the start is uniform over the positions that keep the path inside the image.
So a single frame says almost nothing about the direction: only a position
within one cell of a border rules a direction out. The remaining families need
two frames by construction (which object *entered* first, which one *changed*,
for *how many frames* one is visible). `vocolab.data.baselines` measures how well
the best single-frame answerer does.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace

import numpy as np

from vocolab.core.config import DataConfig
from vocolab.data.scenes import QA, Obj, Scene, new_canvas, paint, pick, pick_balanced, round_robin
from vocolab.data.vocab import check_data_config, number_word

TEMPORAL_FAMILIES = ("direction", "order", "color_change", "visible_count")
MOVES = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}
TRAVEL_CELLS = 1.0  # how far every object moves over the whole clip


@dataclass(frozen=True)
class Track:
    """One object over the clip. Positions are in fine-lattice units (`Clip.step` cells)."""

    shape: str
    color: str
    size: str
    row: int  # at frame 0 (even if not yet visible)
    col: int
    direction: str
    start: int  # first visible frame
    stop: int  # last visible frame (inclusive)
    new_color: str | None = None
    change_at: int | None = None  # first frame drawn in new_color

    def visible(self, t: int) -> bool:
        return self.start <= t <= self.stop

    @property
    def visible_frames(self) -> int:
        return self.stop - self.start + 1

    def position(self, t: int) -> tuple[int, int]:
        dr, dc = MOVES[self.direction]
        return self.row + dr * t, self.col + dc * t

    def color_at(self, t: int) -> str:
        changed = self.change_at is not None and t >= self.change_at
        return self.new_color if changed else self.color


@dataclass(frozen=True)
class Clip:
    tracks: tuple[Track, ...]
    frames: int
    grid: int

    @property
    def step(self) -> float:
        """Cells moved per frame (also the fine-lattice unit)."""
        return clip_step(self.frames)

    def frame_scene(self, t: int) -> Scene:
        """The symbolic state of frame t: visible objects only, positions in cells."""
        if not 0 <= t < self.frames:
            raise ValueError(f"frame_scene: frame {t} outside 0..{self.frames - 1}")
        objs = []
        for tr in self.tracks:
            if tr.visible(t):
                r, c = tr.position(t)
                objs.append(Obj(tr.shape, tr.color_at(t), tr.size,
                                round(r * self.step, 6), round(c * self.step, 6)))
        return Scene(tuple(sorted(objs, key=lambda o: (o.row, o.col))), grid=self.grid)

    def to_json(self) -> str:
        return json.dumps({"frames": self.frames, "grid": self.grid,
                           "tracks": [asdict(t) for t in self.tracks]})

    @classmethod
    def from_json(cls, text: str) -> "Clip":
        tree = json.loads(text)
        return cls(tuple(Track(**t) for t in tree["tracks"]), tree["frames"], tree["grid"])


def clip_step(frames: int) -> float:
    return TRAVEL_CELLS / (frames - 1)


def lattice_max(grid: int, frames: int) -> int:
    """Largest fine-lattice coordinate that keeps an object inside the image."""
    return int(math.floor((grid - 1) / clip_step(frames) + 1e-9))


# -- sampling --------------------------------------------------------------------------


def _collides(a: Track, b: Track, min_sep: int) -> bool:
    for t in range(max(a.start, b.start), min(a.stop, b.stop) + 1):
        (ra, ca), (rb, cb) = a.position(t), b.position(t)
        if max(abs(ra - rb), abs(ca - cb)) < min_sep:
            return True
    return False


def _propose(rng: np.random.Generator, frames: int, min_length: int = 1) -> tuple[str, int, int]:
    """Direction, visible length (uniform min_length..T) and first visible frame."""
    direction = tuple(MOVES)[int(rng.integers(4))]
    length = int(rng.integers(min_length, frames + 1))
    return direction, length, int(rng.integers(0, frames - length + 1))


def _place(rng: np.random.Generator, direction: str, frames: int, kmax: int) -> tuple[int, int]:
    """Start position, uniform over the paths that stay inside the image."""
    span = frames - 1

    def coord(d: int) -> int:
        if d == 0:
            return int(rng.integers(0, kmax + 1))
        return int(rng.integers(0, kmax - span + 1)) + (span if d < 0 else 0)

    dr, dc = MOVES[direction]
    return coord(dr), coord(dc)


def _specs(rng: np.random.Generator, cfg: DataConfig) -> list[Track]:
    """Unplaced tracks: attributes, motion, visibility; the first one changes colour.

    The changer is chosen *before* anything else (visible >= 2 frames, so the change
    can be seen), which keeps the visibility lengths of the other objects uniform.
    """
    n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    pairs = [(c, s) for c in cfg.colors for s in cfg.shapes]
    chosen = [pairs[i] for i in rng.permutation(len(pairs))[:n]]
    specs = []
    for i, (color, shape) in enumerate(chosen):
        size = cfg.sizes[int(rng.integers(len(cfg.sizes)))]
        direction, length, start = _propose(rng, cfg.frames, min_length=2 if i == 0 else 1)
        specs.append(Track(shape, color, size, 0, 0, direction, start, start + length - 1))
    first = specs[0]
    free = [c for c in cfg.colors if (c, first.shape) not in chosen]
    if free:
        specs[0] = replace(first, new_color=free[int(rng.integers(len(free)))],
                           change_at=int(rng.integers(first.start + 1, first.stop + 1)))
    return specs


def sample_clip(rng: np.random.Generator, cfg: DataConfig) -> Clip:
    """A clip of cfg.frames frames with min_objects..max_objects moving objects.

    Every (colour, shape) pair, including the changed colour, is used once per
    clip, so "the <color> <shape>" always names exactly one object. Objects that
    cannot be placed without overlapping another are dropped (long-lived objects
    are placed first, so the drops do not favour any visibility length much).
    """
    check_data_config(cfg)
    frames, kmax = cfg.frames, lattice_max(cfg.grid, cfg.frames)
    min_sep = math.ceil(1 / clip_step(frames) - 1e-9)  # one cell apart: never overlapping
    for _ in range(100):
        specs = sorted(_specs(rng, cfg), key=lambda t: -t.visible_frames)
        tracks: list[Track] = []
        for spec in specs:
            for _try in range(50):  # only the position is retried: motion stays unbiased
                row, col = _place(rng, spec.direction, frames, kmax)
                cand = replace(spec, row=row, col=col)
                if not any(_collides(cand, t, min_sep) for t in tracks):
                    tracks.append(cand)
                    break
        if len(tracks) >= cfg.min_objects:
            return Clip(tuple(sorted(tracks, key=lambda t: (t.row, t.col))), frames, cfg.grid)
    raise ValueError("sample_clip: could not place min_objects objects; the grid is too crowded")


def clip_frame_scene(rng: np.random.Generator, cfg: DataConfig) -> Scene:
    """One frame of a fresh clip as a scene: its objects on the clip's finer lattice, between
    the cells every lattice scene draws them on, one cell apart. A training scene of this kind
    (`data.train_clip_frames`) shows the scene model the positions clip frames hold. The frame
    is one of those with the most visible objects, so it is as full as the clip allows."""
    clip = sample_clip(rng, cfg)
    seen = [sum(tr.visible(t) for tr in clip.tracks) for t in range(clip.frames)]
    fullest = [t for t, n in enumerate(seen) if n == max(seen)]
    return clip.frame_scene(fullest[int(rng.integers(len(fullest)))])


# -- rendering and text ------------------------------------------------------------------


def render_clip(clip: Clip, cfg: DataConfig, rng: np.random.Generator | None = None) -> np.ndarray:
    """`uint8 [T, H, W, 3]`; fresh slight noise per frame when `rng` is given."""
    if clip.grid != cfg.grid or clip.frames != cfg.frames:
        raise ValueError(f"render_clip: clip is {clip.frames} frames on a {clip.grid}-grid, "
                         f"cfg says {cfg.frames} frames on a {cfg.grid}-grid")
    cell = cfg.image_size / cfg.grid
    out = np.empty((clip.frames, cfg.image_size, cfg.image_size, 3), np.uint8)
    for t in range(clip.frames):
        out[t] = new_canvas(cfg.image_size, rng)
        for obj in clip.frame_scene(t).objects:
            paint(out[t], obj, cell)
    return out


def clip_caption(clip: Clip) -> str:
    """"a small red circle moves left , a large blue square moves up and turns green"."""
    parts = []
    for t in sorted(clip.tracks, key=lambda t: (t.start, t.row, t.col)):
        text = f"a {t.size} {t.color} {t.shape} moves {t.direction}"
        parts.append(text + (f" and turns {t.new_color}" if t.new_color else ""))
    return " , ".join(parts)


# -- questions ---------------------------------------------------------------------------


def _named(clip: Clip) -> list[Track]:
    """Objects that "the <color> <shape>" names unambiguously (not the colour changer)."""
    return [t for t in clip.tracks if t.new_color is None]


def _direction_q(clip, rng, asked):
    by_answer: dict[str, list] = {}
    for t in _named(clip):
        q = f"which way does the {t.color} {t.shape} move ?"
        if t.visible_frames >= 2 and q not in asked:  # motion needs two frames
            by_answer.setdefault(t.direction, []).append(q)
    got = pick_balanced(rng, by_answer)
    return got and QA(got[1], got[0], "direction", "which way does the {color} {shape} move ?")


def entry_order(clip: Clip) -> dict[str, str]:
    """{"first": shape, "last": shape} over objects that enter after frame 0, when unique."""
    late = [t for t in clip.tracks if t.start >= 1]
    out = {}
    for word, extreme in (("first", min), ("last", max)):
        if late:
            when = extreme(t.start for t in late)
            who = [t for t in late if t.start == when]
            if len(who) == 1:
                out[word] = who[0].shape
    return out


def _order_q(clip, rng, asked):
    options = [(f"which shape appears {w} ?", s) for w, s in entry_order(clip).items()]
    options = [o for o in options if o[0] not in asked]
    if not options:
        return None
    q, shape = pick(rng, options)
    return QA(q, shape, "order", q)


def _color_change_q(clip, rng, asked):
    q = "which shape changes color ?"
    changed = [t for t in clip.tracks if t.new_color is not None]
    if len(changed) != 1 or q in asked:
        return None
    return QA(q, changed[0].shape, "color_change", q)


def _visible_count_q(clip, rng, asked):
    by_answer: dict[str, list] = {}
    for t in _named(clip):
        q = f"in how many frames is the {t.color} {t.shape} visible ?"
        if q not in asked:
            by_answer.setdefault(number_word(t.visible_frames), []).append(q)
    got = pick_balanced(rng, by_answer)
    return got and QA(got[1], got[0], "visible_count",
                      "in how many frames is the {color} {shape} visible ?")


_FAMILY_FNS = {"direction": _direction_q, "order": _order_q,
               "color_change": _color_change_q, "visible_count": _visible_count_q}


def clip_questions(clip: Clip, rng: np.random.Generator, n: int) -> list[QA]:
    """n temporal questions (see TEMPORAL_FAMILIES), spread evenly over the families.

    "appears first/last" ranks the objects that *enter* after the clip starts:
    objects already there at frame 0 do not "appear"."""
    return round_robin(lambda fam, asked: _FAMILY_FNS[fam](clip, rng, asked),
                       TEMPORAL_FAMILIES, rng, n)
