"""training-curves.png: trailing mean of the loss, a PNG with or without validation points."""

from pathlib import Path

import numpy as np
import pytest

from htcnns.training.curves import trailing_mean, write_curves


def test_trailing_mean_matches_a_plain_loop():
    values = [4.0, 2.0, 6.0, 0.0, 1.0]
    expected = [np.mean(values[max(0, i - 2):i + 1]) for i in range(len(values))]
    assert trailing_mean(values, window=3) == pytest.approx(expected)


@pytest.mark.parametrize("evaluations", [[], [{"step": 5, "dice": {"WT": 0.8, "TC": 0.6, "ET": 0.5}},
                                              {"step": 10, "dice": {"WT": 0.9, "TC": 0.7, "ET": 0.6}}]],
                         ids=["no-validation", "two-validations"])
def test_curves_are_a_png(tmp_path: Path, evaluations: list):
    path = tmp_path / "training-curves.png"
    write_curves(path, list(np.linspace(1.5, 0.3, 10)), evaluations)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["training-curves.png"]  # no temporary file left
