"""Which generated cases (seeds) a run trains and validates on; k-fold cross-validation as sets of seeds.

Every case is generated from its seed, so a split is a set of seeds. A run with ``--seed s`` has a pool of
``--phantoms n`` cases with seeds ``1000 s, 1000 s + 1, ..., 1000 s + n - 1``; ``--refresh-every`` later swaps in
fresh cases with the seeds that follow the pool (``1000 s + n, ...``), which are training cases in every fold.

- Without folds, a run trains on the whole pool and validates on ``--validation-phantoms`` cases with seeds
  ``100000 + 1000 s, ...``, generated from the validation sources (synthseg: the held-out tumour label maps).
- With ``--folds K --fold i``, pool case j (seed ``1000 s + j``) is in fold ``j mod K``. The run trains on the pool
  cases of the other folds and validates on those of fold i, generated from the training sources like the rest of
  the pool. The K runs with one seed and pool size, ``--fold 0`` to ``K - 1``, validate once on every pool case.
"""

from __future__ import annotations

from dataclasses import dataclass

from htcnns.errors import SettingsError

POOL_SEED_STRIDE = 1000
VALIDATION_SEED_OFFSET = 100_000


@dataclass(frozen=True)
class SeedSplit:
    """The seeds of one run.

    validation_source: the generator's source split for the validation cases ("train" or "validation").
    first_renewal: seed of the first case that ``--refresh-every`` swaps into the training pool.
    """

    train: tuple[int, ...]
    validation: tuple[int, ...]
    validation_source: str
    first_renewal: int


def split_seeds(seed: int, pool_size: int, validation_cases: int, folds: int = 0, fold: int = 0) -> SeedSplit:
    """The training and validation seeds of a run (module docstring); ``folds`` 0 means no cross-validation.

    Raises:
        SettingsError: ``folds`` is 1 or negative, ``fold`` is not in [0, folds), or the pool has fewer cases
            than folds.
    """
    first = seed * POOL_SEED_STRIDE
    pool = tuple(range(first, first + pool_size))
    if folds == 0:
        start = VALIDATION_SEED_OFFSET + first
        return SeedSplit(pool, tuple(range(start, start + validation_cases)), "validation", first + pool_size)
    if folds < 2 or not 0 <= fold < folds or pool_size < folds:
        raise SettingsError(f"--folds {folds} --fold {fold} with --phantoms {pool_size}: need folds >= 2 (or 0 for "
                            "no cross-validation), 0 <= fold < folds and at least one case per fold")
    held_out = tuple(s for j, s in enumerate(pool) if j % folds == fold)
    return SeedSplit(tuple(s for s in pool if s not in held_out), held_out, "train", first + pool_size)
