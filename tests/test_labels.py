import numpy as np

from htcnns.labels import Label, dice, labels_from_regions, region_dice, regions_from_labels


def test_regions_round_trip_every_label():
    labels = np.array([0, 1, 2, 3], np.uint8).reshape(1, 1, 4)
    regions = regions_from_labels(labels)
    assert regions[:, 0, 0].tolist() == [[False, True, True, True], [False, True, False, True],
                                         [False, False, False, True]]
    assert np.array_equal(labels_from_regions(regions), labels)


def test_labels_from_regions_drops_inner_regions_outside_outer():
    regions = np.zeros((3, 1, 1, 3), bool)
    regions[2, 0, 0, 0] = True            # ET alone: outside TC and WT -> background
    regions[1:, 0, 0, 1] = True           # TC + ET without WT -> background
    regions[:, 0, 0, 2] = True            # all three -> ET
    assert labels_from_regions(regions)[0, 0].tolist() == [0, 0, Label.ET]


def test_dice_conventions():
    empty = np.zeros(5, bool)
    assert dice(empty, empty) == 1.0
    assert dice(np.array([1, 1, 0, 0], bool), np.array([1, 0, 0, 0], bool)) == 2 / 3
    labels = np.array([1, 2, 3], np.uint8)
    assert region_dice(labels, labels) == {"WT": 1.0, "TC": 1.0, "ET": 1.0}
