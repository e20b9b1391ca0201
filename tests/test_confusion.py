"""Which answers a model gives (`evaluation.confusion`) and their figure: counts checked by
hand on made-up answers, the axis/order split on a case whose shares are known."""

import numpy as np
import pytest

from vocolab.evaluation.confusion import OTHER, SPATIAL_AXES, answer_confusion, grouped_accuracy
from vocolab.reporting.confusion import confusion_title, plot_confusion

# gold "left" x4: left, left, right (order wrong), above (axis wrong); gold "below" x2: below, "red" (other)
GOLD = ["left", "left", "left", "left", "below", "below", "red"]
PRED = ["left", " Left ", "right", "above", "below", "red", "blue"]
FAMS = ["spatial"] * 6 + ["color"]


def test_counts_each_gold_answer_against_what_was_answered():
    conf = answer_confusion(PRED, GOLD, FAMS, "spatial")
    # the gold answers and every direction (spatial's answer groups), sorted, then the rest
    assert conf["labels"] == ["above", "below", "left", "right", OTHER]
    assert conf["counts"] == [[0, 0, 0, 0, 0], [0, 1, 0, 0, 1], [1, 0, 2, 1, 0], [0, 0, 0, 0, 0]]
    assert answer_confusion(["red", "green"], ["red", "blue"], ["color"] * 2, "color") == {
        "labels": ["blue", "red", OTHER], "counts": [[0, 0, 1], [0, 1, 0]]}  # no groups: gold answers only
    assert np.asarray(conf["counts"]).sum() == FAMS.count("spatial")  # the colour question is not counted


def test_the_axis_and_order_split_of_spatial_answers():
    # gold left x4 as above, gold above x2: below (order wrong), left (axis wrong)
    gold = ["left"] * 4 + ["above"] * 2
    pred = ["left", "left", "right", "above", "below", "left"]
    conf = answer_confusion(pred, gold, ["spatial"] * 6, "spatial")
    groups = conf["groups"]
    # answers on the gold answer's axis: left, left, right, below = 4 of 6; of those 2 exactly right
    assert groups == {"group": pytest.approx(4 / 6), "within_group": pytest.approx(2 / 4), "examples": 6}
    assert grouped_accuracy(conf, SPATIAL_AXES) == groups
    assert "groups" not in answer_confusion(["red"], ["red"], ["color"], "color")  # colour has no groups


def test_a_family_without_questions_is_a_clear_error():
    with pytest.raises(ValueError, match="no 'count' questions"):
        answer_confusion(PRED, GOLD, FAMS, "count")
    with pytest.raises(ValueError):  # predictions and questions out of step
        answer_confusion(PRED[:-1], GOLD, FAMS, "spatial")


def test_the_figure_has_a_panel_per_run_titled_with_its_axis_and_order():
    conf = answer_confusion(["left", "above", "above", "below"], ["left", "left", "above", "above"],
                            ["spatial"] * 4, "spatial")
    fig = plot_confusion({"upper": conf, "voco-k1": conf}, "spatial")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == [confusion_title("upper", conf), confusion_title("voco-k1", conf)]
    assert titles[0] == "upper: 50%\naxis 75%, order 67%"
    with pytest.raises(ValueError):
        plot_confusion({}, "spatial")
