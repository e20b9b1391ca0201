import pytest

from vocolab.evaluation.metrics import FamilyExactMatch, retention


def test_family_exact_match_accumulates_over_batches():
    m = FamilyExactMatch(["color", "count"])
    m.update(["Red", "two"], ["red", "three"], ["color", "count"])
    m.update([" red "], ["blue"], ["color"])
    out = m.compute()
    assert out["examples"] == 3
    assert out["accuracy"] == pytest.approx(1 / 3)
    assert out["per_family"] == {"color": 0.5, "count": 0.0}
    with pytest.raises(ValueError, match="unknown family"):
        m.update(["x"], ["x"], ["shape"])
    with pytest.raises(ValueError):
        m.update(["x", "y"], ["x"], ["color"])


def test_retention():
    assert retention(0.8, 0.3, 0.9) == pytest.approx(0.5 / 0.6)
    assert retention(0.3, 0.3, 0.9) == 0.0
    assert retention(0.5, 0.5, 0.5) is None
