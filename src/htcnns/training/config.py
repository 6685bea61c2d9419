"""``TrainConfig``: the settings of one ``htcnns train`` run (the CLI fills it; ``htcnns.train`` re-exports it)."""

from __future__ import annotations

from dataclasses import dataclass

from htcnns.networks import PRESETS
from htcnns.synth import BRATS_SHAPE

DATA_KINDS = ("phantoms", "synthseg")


@dataclass(frozen=True)
class TrainConfig:
    """One training run; written into ``train-config.json`` and the manifest's provenance.

    phantoms: the pool of generated training cases (split into folds with ``folds`` > 0).
    refresh_every / checkpoint_every / validate_every: every N steps (0: never), swap a fresh case into the pool,
    write a checkpoint and the curves, score the validation cases.
    folds, fold: k-fold cross-validation (``htcnns.training.folds``); folds 0 means none.
    """

    architecture: str
    output: str
    preset: str = "compact"
    steps: int = 300
    seed: int = 0
    phantoms: int = 16
    validation_phantoms: int = 3
    patch_size: int = 64
    batch_size: int = 2
    learning_rate: float = 3e-3
    roi_size: int = 96
    threads: int = 2
    phantom_shape: tuple[int, int, int] = BRATS_SHAPE
    init_from: str = ""
    data: str = "phantoms"
    atlas: str = ""
    domain: str = "adult"
    refresh_every: int = 0
    deep_supervision: bool = True
    checkpoint_every: int = 100
    resume: bool = False
    validate_every: int = 0
    folds: int = 0
    fold: int = 0
    freeze_encoder: bool = False
    tune_et_threshold: bool = False


def network_config(config: TrainConfig) -> dict:
    """The preset's constructor arguments, with the ROI where the architecture takes one."""
    preset = dict(PRESETS[config.architecture][config.preset])
    if "roi_size" in preset:
        preset["roi_size"] = config.roi_size
    return preset
