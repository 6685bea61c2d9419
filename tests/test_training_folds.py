"""Seed splits: without folds the held-out validation seeds; with --folds K each pool case is validated once."""

import pytest

from htcnns.errors import SettingsError
from htcnns.training.folds import split_seeds


def test_without_folds_the_whole_pool_trains():
    split = split_seeds(seed=2, pool_size=4, validation_cases=3)
    assert split.train == (2000, 2001, 2002, 2003)
    assert split.validation == (102000, 102001, 102002)
    assert split.validation_source == "validation" and split.first_renewal == 2004


@pytest.mark.parametrize("pool_size, folds", [(5, 2), (6, 3), (7, 5)], ids=["5/2", "6/3", "7/5"])
def test_folds_partition_the_pool(pool_size: int, folds: int):
    splits = [split_seeds(1, pool_size, 3, folds, fold) for fold in range(folds)]
    pool = set(range(1000, 1000 + pool_size))
    held_out = [set(split.validation) for split in splits]
    assert set().union(*held_out) == pool and sum(len(h) for h in held_out) == pool_size
    for fold, split in enumerate(splits):
        assert set(split.train) == pool - held_out[fold] and split.validation_source == "train"
        assert all((seed - 1000) % folds == fold for seed in split.validation)
        assert split.first_renewal == 1000 + pool_size


@pytest.mark.parametrize("pool_size, folds, fold", [(4, 1, 0), (4, 2, 2), (4, 3, -1), (2, 3, 0)],
                         ids=["one-fold", "fold-too-big", "negative-fold", "pool-too-small"])
def test_bad_fold_settings_are_refused(pool_size: int, folds: int, fold: int):
    with pytest.raises(SettingsError, match="need folds >= 2"):
        split_seeds(0, pool_size, 3, folds, fold)
