"""``TrainConfig``: the settings of one ``htcnns train`` run (the CLI fills it; ``command`` re-exports it)."""

from __future__ import annotations

from dataclasses import dataclass

from htcnns.errors import SettingsError
from htcnns.networks import PRESETS
from htcnns.training.phantoms import BRATS_SHAPE

DATA_KINDS = ("phantoms", "synthseg", "synthseg2")


@dataclass(frozen=True)
class TrainConfig:
    """One training run; written into ``train-config.json`` and the manifest's provenance.

    phantoms: the pool of generated training cases (split into folds with ``folds`` > 0).
    refresh_every / checkpoint_every / validate_every: every N steps (0: never), swap a fresh case into the pool,
    write a checkpoint and the curves, score the validation cases.
    folds, fold: k-fold cross-validation (``htcnns.training.folds``); folds 0 means none. With ``real_data``
    the folds split the real cases (by case id), and generated cases all train.
    data: the generated kind ("phantoms", "synthseg", "synthseg2" (SynthSeg anatomies, synthseg.v2), or ""
    for none); real_data: folders of labelled cases.
    data_weights: the share of patches drawn from each source, generated first (default: equal shares).
    foreground_share: the share of patches centred on a tumour voxel (nnU-Net's oversampling); the rest anywhere.
    thick_slices: the chance of each channel of a patch to be re-sliced 2-7 mm thick (``RandThickSlicesd``).
    thick_consistency: the weight of a second loss term, the network on each patch against the frozen
    ``init_from`` network on the same patch without thick slices (0: none).
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
    real_data: tuple[str, ...] = ()
    data_weights: tuple[float, ...] = ()
    foreground_share: float = 2 / 3
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
    thick_slices: float = 0.0
    thick_consistency: float = 0.0


def network_config(config: TrainConfig) -> dict:
    """The preset's constructor arguments, with the ROI where the architecture takes one."""
    preset = dict(PRESETS[config.architecture][config.preset])
    if "roi_size" in preset:
        preset["roi_size"] = config.roi_size
    return preset


def data_sources(config: TrainConfig) -> tuple[str, ...]:
    """The run's sources in sampling order: the generated kind (if any), then each real folder."""
    return ((config.data,) if config.data else ()) + tuple(config.real_data)


def check_shares(config: TrainConfig) -> None:
    """Refuse a ``--foreground-share`` or ``--thick-slices`` outside [0, 1]."""
    for option, value in (("--foreground-share", config.foreground_share), ("--thick-slices", config.thick_slices)):
        if not 0.0 <= value <= 1.0:
            raise SettingsError(f"{option} {value}: give a share between 0 and 1")
    if config.thick_consistency < 0:
        raise SettingsError(f"--thick-consistency {config.thick_consistency}: give a weight of 0 or more")
    if config.thick_consistency > 0 and not (config.init_from and config.thick_slices > 0):
        raise SettingsError("--thick-consistency needs --init-from (the network to agree with) and --thick-slices "
                            "above 0 (the patches it should agree on)")


def source_weights(config: TrainConfig) -> tuple[float, ...]:
    """The share of patches of each source of ``data_sources`` (normalised; equal shares by default)."""
    count = len(data_sources(config))
    weights = config.data_weights or (1.0,) * count
    if len(weights) != count or min(weights) < 0 or sum(weights) <= 0:
        raise SettingsError(f"--data-weights {','.join(map(str, weights))}: need {count} non-negative weights, "
                            f"one per --data source ({', '.join(data_sources(config))}), not all zero")
    return tuple(w / sum(weights) for w in weights)
