"""ET threshold tuning through the real post-processing: the chosen threshold is the argmax, ties go to 0.5."""

import numpy as np
import pytest

from htcnns.inference.postprocess import PostprocessParams, postprocess
from htcnns.inference.preprocess import Prepared
from htcnns.labels import Label
from htcnns.training.tuning import ET_THRESHOLDS, ValidationPrediction, best_threshold, mean_dice, tune_et_threshold


def hand_made_case(false_et_probability: float) -> ValidationPrediction:
    """A 20^3 case: a true 5^3 ET core inside a 9^3 tumour, p(ET) 0.8; a separate 4^3 false ET block."""
    truth = np.zeros((20, 20, 20), np.uint8)
    truth[2:11, 2:11, 2:11] = Label.ED
    truth[4:9, 4:9, 4:9] = Label.ET
    probs = np.zeros((3, 20, 20, 20), np.float32)
    probs[:, 2:11, 2:11, 2:11] = [[[[0.9]]], [[[0.1]]], [[[0.1]]]]
    probs[:, 4:9, 4:9, 4:9] = 0.8
    probs[:, 14:18, 14:18, 14:18] = false_et_probability  # ET in the prediction, ED... nowhere in the truth
    prepared = Prepared("hand", np.zeros((4, 0, 0, 0), np.float32), np.ones((20, 20, 20), bool),
                        (slice(0, 20),) * 3, (20, 20, 20), np.array([[0, 1], [1, 1], [2, 1]]))
    return ValidationPrediction(probs, prepared, truth)


def test_chosen_threshold_is_the_argmax_of_mean_et_dice():
    cases = [hand_made_case(0.62), hand_made_case(0.57)]
    chosen, scores = tune_et_threshold(cases, PostprocessParams())
    assert list(scores) == list(ET_THRESHOLDS)
    brute = {t: np.mean([mean_dice([c], PostprocessParams(et_threshold=t))["ET"] for c in cases])
             for t in ET_THRESHOLDS}
    assert scores == pytest.approx(brute, abs=1e-4)
    assert chosen == 0.65  # 0.65 and above drop every false ET voxel; 0.65 is the closest to 0.5
    assert scores[0.5] == scores[0.55] < scores[0.6] < scores[0.65] == scores[0.7]
    labels = postprocess(cases[0].probs, PostprocessParams(et_threshold=chosen), brain=cases[0].prepared.brain)
    assert (labels == Label.ET).sum() == 125


@pytest.mark.parametrize("scores, expected", [({0.4: 0.8, 0.6: 0.8, 0.7: 0.5}, 0.4),
                                              ({0.3: 0.7, 0.5: 0.7, 0.65: 0.71}, 0.65),
                                              ({0.55: 0.9, 0.7: 0.9}, 0.55)],
                         ids=["tie-equidistant-lower", "strict-max", "tie-closer-to-half"])
def test_best_threshold(scores: dict, expected: float):
    assert best_threshold(scores) == expected
