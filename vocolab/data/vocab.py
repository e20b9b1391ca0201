"""The closed vocabulary of the procedural world.

Every caption, question and answer is built from the words listed here, so the
tokenizer is a plain word-level lookup with no unknown words in generated data,
and a test can prove it. The word list is derived from a `DataConfig` (its
shapes, colours and sizes, plus enough number words for its counts and frames)
and is sorted, so the same config always gives the same token ids.
"""

from __future__ import annotations

from vocolab.core.config import DataConfig

# question families asked about training scenes only (`data.train_extra_families`): where an
# object is ("row", "column"), "spatial" once more than the scene's round robin asks it, and
# which line two objects share ("axis": the half of `spatial` its upper bounds miss most)
TRAINING_FAMILIES = ("row", "column", "spatial", "axis")
# words only the "axis" family asks with: added to the vocabulary only when it is asked, so
# that every other config keeps its token ids (and its trained stages their keys)
AXIS_WORDS = ("or",)

NUMBER_WORDS = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
    "eighteen", "nineteen", "twenty",
)

# RGB colours far apart from each other and from the dark background.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 255),
    "yellow": (240, 220, 40),
    "purple": (160, 60, 220),
    "cyan": (40, 220, 230),
    "white": (245, 245, 245),
    "orange": (255, 140, 0),
    "pink": (255, 130, 190),
    "brown": (140, 85, 40),
    "gray": (128, 128, 128),
}

# Object radius as a fraction of a cell; small and large differ by almost 2x.
SIZE_SCALE: dict[str, float] = {"tiny": 0.16, "small": 0.25, "medium": 0.35, "large": 0.46}

SHAPES_DRAWABLE = ("circle", "square", "triangle", "diamond", "cross", "ring", "star", "hexagon")

DIRECTIONS = ("left", "right", "up", "down")  # motion in clips
RELATIONS = ("left", "right", "above", "below")  # spatial answers
VERTICAL_WORDS = ("top", "middle", "bottom")
HORIZONTAL_WORDS = ("left", "center", "right")
YES_NO = ("yes", "no")

# Words of the question templates and captions (everything that is not an attribute).
FUNCTION_WORDS = (
    "?", ",", "a", "and", "are", "appears", "changes", "color", "does", "first", "frames",
    "how", "in", "is", "last", "many", "move", "moves", "object", "objects", "relative",
    "shape", "the", "there", "to", "turns", "visible", "way", "what", "where", "which",
    "row", "column",  # exact positions in training captions and questions
)


def plural(shape: str) -> str:
    """English plural of a shape name ("cross" -> "crosses")."""
    return shape + ("es" if shape.endswith(("s", "x", "sh", "ch")) else "s")


def number_word(n: int) -> str:
    if not 0 <= n < len(NUMBER_WORDS):
        raise ValueError(f"number_word: {n} is outside 0..{len(NUMBER_WORDS) - 1}")
    return NUMBER_WORDS[n]


def check_data_config(cfg: DataConfig) -> None:
    """Fail early on attributes the renderer cannot draw or numbers it cannot spell."""
    for name, values, known in (("shapes", cfg.shapes, SHAPES_DRAWABLE),
                                ("colors", cfg.colors, tuple(PALETTE)),
                                ("sizes", cfg.sizes, tuple(SIZE_SCALE))):
        unknown = [v for v in values if v not in known]
        if unknown:
            raise ValueError(f"data.{name}: {unknown} not supported; choose from {list(known)}")
        if len(set(values)) != len(values):
            raise ValueError(f"data.{name}: duplicate entries in {list(values)}")
    unknown = [f for f in cfg.train_extra_families if f not in TRAINING_FAMILIES]
    if unknown:
        raise ValueError(f"data.train_extra_families: {unknown} not supported; choose from {list(TRAINING_FAMILIES)}")
    if max(cfg.max_objects, cfg.frames, cfg.grid) >= len(NUMBER_WORDS):
        raise ValueError(f"data.max_objects/frames: answers above {len(NUMBER_WORDS) - 1} have no number word")


def words(cfg: DataConfig) -> list[str]:
    """Every word any caption, question or answer for `cfg` can contain, sorted."""
    check_data_config(cfg)
    top = max(9, cfg.max_objects, cfg.frames, cfg.grid)
    vocab = set(FUNCTION_WORDS) | set(DIRECTIONS) | set(RELATIONS) | set(YES_NO)
    vocab |= set(VERTICAL_WORDS) | set(HORIZONTAL_WORDS)
    vocab |= set(cfg.shapes) | {plural(s) for s in cfg.shapes} | set(cfg.colors) | set(cfg.sizes)
    vocab |= set(NUMBER_WORDS[: top + 1])
    if "axis" in cfg.train_extra_families:
        vocab |= set(AXIS_WORDS)
    return sorted(vocab)
