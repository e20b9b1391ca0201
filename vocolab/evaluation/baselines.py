"""Answerers that cannot see what the benchmark is about, to bound its shortcuts.

`BlindAnswerer` reads only the question: if it scores well, the questions leak
their answers through language priors and the benchmark measures nothing.
`SingleFrameAnswerer` sees the full symbolic state of ONE frame of a clip: if it
scores well on a temporal family, that family does not need time.

Both are fit on the training split and scored on the held-out split.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from typing import Any, Iterable

from vocolab.core.config import DataConfig
from vocolab.data.clips import MOVES, Clip, clip_step, lattice_max
from vocolab.data.scenes import QA, Scene
from vocolab.evaluation.metrics import FamilyExactMatch


def as_qas(items: Iterable[QA | dict[str, Any]]) -> list[QA]:
    """QAs from QA objects or dataset rows (one row holds lists of questions)."""
    out: list[QA] = []
    for item in items:
        if isinstance(item, QA):
            out.append(item)
        elif isinstance(item, dict) and isinstance(item.get("question"), (list, tuple)):
            out += [QA(*z) for z in zip(item["question"], item["answer"], item["family"], item["template"])]
        elif isinstance(item, dict):
            out.append(QA(item["question"], item["answer"], item["family"], item["template"]))
        else:
            raise ValueError(f"as_qas: expected a QA or a dataset row, got {type(item).__name__}")
    return out


def _template_regex(template: str) -> re.Pattern:
    parts = re.split(r"\{\w+\}", template)
    return re.compile("^" + r"(\S+)".join(re.escape(p) for p in parts) + "$")


def parse_slots(template: str, question: str) -> list[str] | None:
    """The words filling the template's slots, in order, or None if it does not match."""
    m = _template_regex(template).match(question)
    return list(m.groups()) if m else None


def _majority(counter: Counter) -> str:
    # ties broken alphabetically so that results never depend on dict order
    return min(counter.items(), key=lambda kv: (-kv[1], kv[0]))[0]


class BlindAnswerer:
    """Majority train answer per question template (key="template") or per exact
    question (key="question", falling back to the template for unseen questions)."""

    def __init__(self, key: str = "template"):
        if key not in ("template", "question"):
            raise ValueError(f"BlindAnswerer: key must be 'template' or 'question', got {key!r}")
        self.key = key
        self.by_template: dict[str, Counter] = defaultdict(Counter)
        self.by_question: dict[str, Counter] = defaultdict(Counter)
        self.overall: Counter = Counter()

    def fit(self, items: Iterable[QA | dict]) -> "BlindAnswerer":
        for qa in as_qas(items):
            self.by_template[qa.template][qa.answer] += 1
            self.by_question[qa.question][qa.answer] += 1
            self.overall[qa.answer] += 1
        if not self.overall:
            raise ValueError("BlindAnswerer.fit: no questions to fit on")
        self._regexes = [(t, _template_regex(t)) for t in self.by_template]
        return self

    def template_of(self, question: str) -> str | None:
        return next((t for t, rx in self._regexes if rx.match(question)), None)

    def predict(self, question: str, template: str | None = None) -> str:
        if not self.overall:
            raise ValueError("BlindAnswerer.predict: call fit first")
        if self.key == "question" and question in self.by_question:
            return _majority(self.by_question[question])
        template = template or self.template_of(question)
        if template in self.by_template:
            return _majority(self.by_template[template])
        return _majority(self.overall)

    def answer(self, qa: QA, context: Any = None) -> str:
        return self.predict(qa.question, qa.template)


class SingleFrameAnswerer:
    """Sees the symbolic state of frame `frame` only, and uses it as well as it can:

    - direction: which directions the named object's position at this frame still
      allows (a position within one cell of a border rules some out), plus the
      train majority for that situation;
    - visible_count: whether the named object is visible in this frame (a visible
      object tends to be visible longer), plus the train majority for that;
    - order / color_change: the most common shape visible in this frame.

    Anything else falls back to the blind train majority."""

    def __init__(self, cfg: DataConfig, frame: int):
        if not 0 <= frame < cfg.frames:
            raise ValueError(f"SingleFrameAnswerer: frame {frame} outside 0..{cfg.frames - 1}")
        self.cfg, self.frame = cfg, frame
        self.step, self.kmax = clip_step(cfg.frames), lattice_max(cfg.grid, cfg.frames)
        self.blind = BlindAnswerer()
        self.table: dict[tuple, Counter] = defaultdict(Counter)

    def _find(self, qa: QA, scene: Scene):
        slots = parse_slots(qa.template, qa.question) or []
        if len(slots) != 2:
            return None
        color, shape = slots
        return next((o for o in scene.objects if o.color == color and o.shape == shape), None)

    def _allowed(self, obj) -> frozenset[str]:
        """Directions consistent with this position at this frame."""
        span, t = self.cfg.frames - 1, self.frame
        r, c = round(obj.row / self.step), round(obj.col / self.step)
        ok = set()
        for name, (dr, dc) in MOVES.items():
            r0, c0 = r - dr * t, c - dc * t  # where it started
            lo_r, hi_r = (span if dr < 0 else 0), (self.kmax - (span if dr > 0 else 0))
            lo_c, hi_c = (span if dc < 0 else 0), (self.kmax - (span if dc > 0 else 0))
            if lo_r <= r0 <= hi_r and lo_c <= c0 <= hi_c:
                ok.add(name)
        return frozenset(ok)

    def _feature(self, qa: QA, scene: Scene) -> tuple | None:
        if qa.family == "direction":
            obj = self._find(qa, scene)
            return ("absent",) if obj is None else ("seen", self._allowed(obj))
        if qa.family == "visible_count":
            return (self._find(qa, scene) is not None,)
        return None

    def fit(self, pairs: Iterable[tuple[Clip, QA]]) -> "SingleFrameAnswerer":
        pairs = list(pairs)
        self.blind.fit(qa for _, qa in pairs)
        for clip, qa in pairs:
            feature = self._feature(qa, clip.frame_scene(self.frame))
            if feature is not None:
                self.table[(qa.template, feature)][qa.answer] += 1
        return self

    def predict(self, qa: QA, scene: Scene) -> str:
        feature = self._feature(qa, scene)
        if feature is not None and (qa.template, feature) in self.table:
            return _majority(self.table[(qa.template, feature)])
        if qa.family in ("order", "color_change") and scene.objects:
            prior = self.blind.by_template.get(qa.template, Counter())
            shapes = Counter(o.shape for o in scene.objects)
            return max(shapes, key=lambda s: (shapes[s], prior[s], s))
        return self.blind.predict(qa.question, qa.template)

    def answer(self, qa: QA, context: Clip) -> str:
        return self.predict(qa, context.frame_scene(self.frame))


def accuracy(answerer: Any, examples: Iterable[QA | tuple[Any, QA]]) -> dict[str, Any]:
    """Exact-match accuracy, overall and per family.

    `examples` holds QAs (for answerers that need no context) or (context, QA) pairs.
    """
    pairs = [(None, ex) if isinstance(ex, QA) else ex for ex in examples]
    if not pairs:
        raise ValueError("accuracy: no examples")
    qas = [qa for _, qa in pairs]
    metric = FamilyExactMatch(sorted({qa.family for qa in qas}))
    metric.update([answerer.answer(qa, context) for context, qa in pairs], [qa.answer for qa in qas],
                  [qa.family for qa in qas])
    return metric.compute()


def best_single_frame(cfg: DataConfig, train: list[tuple[Clip, QA]],
                      heldout: list[tuple[Clip, QA]]) -> dict[str, Any]:
    """Score a SingleFrameAnswerer at every frame; report each family's best frame."""
    per_frame = {t: accuracy(SingleFrameAnswerer(cfg, t).fit(train), heldout)
                 for t in range(cfg.frames)}
    families = sorted({qa.family for _, qa in heldout})
    best_family = {f: max((s["per_family"].get(f, 0.0), t) for t, s in per_frame.items())
                   for f in families}
    best_overall = max((s["accuracy"], t) for t, s in per_frame.items())
    return {"per_frame": per_frame,
            "best_per_family": {f: {"accuracy": a, "frame": t} for f, (a, t) in best_family.items()},
            "best_overall": {"accuracy": best_overall[0], "frame": best_overall[1]}}
