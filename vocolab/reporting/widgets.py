"""Interactive explorers for the notebooks.

Each widget is a thin shell around a pure function (`explorer_state_mask`) that
tests can call directly: the widget only moves sliders and redraws, so what it
shows is exactly what the tested code computes.
"""

from __future__ import annotations

import typing

import matplotlib.pyplot as plt
import torch

from vocolab.core.config import MASK_MODES
from vocolab.core.layout import Layout, build_layout
from vocolab.core.masks import build_mask
from vocolab.reporting.masks import MODE_CAPTIONS, plot_mask

if typing.TYPE_CHECKING:
    import ipywidgets as W


def explorer_state_mask(image_tokens: int, voco_tokens: int, question_len: int, answer_len: int,
                        frames: int, mode: str) -> tuple[Layout, torch.Tensor]:
    """The layout and the `[1, 1, L, L]` bool mask (as `build_mask` makes it) for one
    slider state; `answer_len` counts the EOS token."""
    layout = build_layout(question_len, answer_len, frames=frames,
                          image_tokens=image_tokens, voco_tokens=voco_tokens)
    return layout, build_mask([layout], mode)


def _summary(layout: Layout, mask: torch.Tensor, mode: str) -> str:
    """What the answer may see, in words: the number that VoCo compression is about."""
    m = mask[0, 0]
    L = layout.length
    if layout.answer.length:
        first_answer = layout.answer.start
        seen = int(m[first_answer].sum())
        answer = (f"the first answer token may attend to <b>{seen}</b> of the {first_answer + 1} "
                  f"positions up to itself")
    else:
        answer = "no answer tokens"
    allowed = int(m.sum())
    return (f"<code>{mode}</code> | L = {L} tokens | {allowed} of {L * L} (query, key) pairs allowed "
            f"| {answer}")


def mask_explorer(max_image_tokens: int = 64, max_voco: int = 8, max_text: int = 12,
                  max_frames: int = 4) -> W.Widget:
    """Sliders for V, K, question/answer length and frames, a mode toggle, and the mask.

    Move one knob at a time and watch which blocks appear or vanish: that is the
    fastest way to internalise what each mask mode hides from whom.
    """
    import ipywidgets as W  # here, not at the top: the CLI and a GPU job run without Jupyter's packages

    style = {"description_width": "130px"}  # wide enough for the longest label
    knobs = {
        "image_tokens": W.IntSlider(value=min(16, max_image_tokens), min=0, max=max_image_tokens,
                                    description="image tokens V", style=style),
        "voco_tokens": W.IntSlider(value=min(2, max_voco), min=0, max=max_voco,
                                   description="VoCo tokens K", style=style),
        "question_len": W.IntSlider(value=min(5, max_text), min=0, max=max_text,
                                    description="question len", style=style),
        "answer_len": W.IntSlider(value=min(3, max_text), min=1, max=max_text,
                                  description="answer len + EOS", style=style),
        "frames": W.IntSlider(value=1, min=1, max=max_frames, description="frames", style=style),
        "mode": W.ToggleButtons(options=list(MASK_MODES), value="voco", description="mode",
                                style=style),
    }
    caption = W.HTML()

    def draw(image_tokens, voco_tokens, question_len, answer_len, frames, mode):
        from IPython.display import display  # only needed once a widget is drawn

        layout, mask = explorer_state_mask(image_tokens, voco_tokens, question_len, answer_len,
                                           frames, mode)
        caption.value = _summary(layout, mask, mode)
        fig = plot_mask(mask, layout, title=MODE_CAPTIONS.get(mode, mode))
        try:
            from IPython import get_ipython

            if get_ipython() is not None:  # headless (tests): nothing to display into
                display(fig)
        finally:
            plt.close(fig)

    out = W.interactive_output(draw, knobs)
    sliders = [knobs[k] for k in ("image_tokens", "voco_tokens", "frames", "question_len",
                                  "answer_len")]
    controls = W.HBox([W.VBox(sliders[:3]), W.VBox(sliders[3:])])
    return W.VBox([controls, knobs["mode"], caption, out])


__all__ = ["explorer_state_mask", "mask_explorer"]
