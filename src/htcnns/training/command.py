"""``htcnns train``: train one compact network on synthetic data, score it and export it as frozen weights.

Data (``--data``): the procedural phantoms of ``phantoms``, or SynthSeg-style cases of ``synthseg``
(SRI24 anatomy + real tumour shapes, random physics-ordered contrasts; needs ``--atlas``, the shared data
folder). Training data goes through the same ``preprocess`` as inference. Loss: Dice + binary cross-entropy on the
three nested region channels (MONAI ``DiceCELoss``), deep-supervised for the U-Net; Adam; cosine annealing; random
flips and intensity shift/scale (``htcnns.training.loop``). Which seeds train and validate, with or without k-fold
cross-validation: ``htcnns.training.folds``. A run writes ``train-config.json`` first, then every
``--checkpoint-every`` steps a checkpoint that ``--resume`` continues from, and ``training-curves.png``. The exported
network is scored on the validation cases through the full inference path, after tuning its ET threshold if asked.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import platform
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from htcnns import __version__
from htcnns.errors import SettingsError, WeightsError
from htcnns.inference.io import atomic_write_text
from htcnns.inference.postprocess import PostprocessParams
from htcnns.inference.predict import predict, to_network_input
from htcnns.inference.preprocess import Prepared
from htcnns.networks import PRESETS
from htcnns.training.card import data_paragraph as _data_paragraph
from htcnns.training.card import describe_data, model_card
from htcnns.training.checkpoint import CHECKPOINT_STATE, Progress, load_checkpoint, save_checkpoint
from htcnns.training.config import DATA_KINDS, TrainConfig, check_shares, network_config, source_weights
from htcnns.training.curves import CURVES_NAME, write_curves
from htcnns.training.data import (
    Sample,
    TrainingCase,
    case_maker,
    make_samples,
    prepare_phantom,
    random_patch,
    to_sample,
)
from htcnns.training.folds import VALIDATION_SEED_OFFSET, SeedSplit, split_seeds
from htcnns.training.loop import Hooks, fit, make_learner, renewals_before, run_steps
from htcnns.training.networks import (
    ENCODER_PARAMETERS,
    freeze_encoder,
    load_parent_weights,
    plain_network,
    training_network,
    uses_deep_supervision,
)
from htcnns.training.real import RealCase, load_real_cases, regions_on_prepared_grid, split_cases
from htcnns.training.synthseg.domains import DOMAINS
from htcnns.training.tuning import ValidationPrediction, case_dice, mean_dice, tune_et_threshold
from htcnns.weights import LoadedModel, Manifest, load_model, save_model

__all__ = [  # the names other modules and tests use from here, wherever they are defined
    "VALIDATION_SEED_OFFSET", "Sample", "TrainConfig", "_data_paragraph", "case_maker", "data_description", "fit",
    "make_samples", "model_card", "network_config", "random_patch", "to_sample", "train",
]

log = logging.getLogger(__name__)

RUN_CONFIG_NAME = "train-config.json"
REAL_DATA_TERMS = ("real BraTS data: BraTS data terms apply (research use; cite Menze et al. 2015, Bakas et al. "
                   "2017, Baid et al. 2021)")
RESUMABLE_CHANGES = ("output", "threads", "resume", "checkpoint_every", "validate_every")
"""Settings a resumed run may change; any other difference from the checkpoint's run is refused."""


Validator = Callable[[], tuple[Prepared, np.ndarray]]
"""Gives one validation case: its ``Prepared`` input and its BraTS 2023 labels on the case's own grid."""


@dataclass(frozen=True)
class Run:
    """What stays fixed during one run: its config, seeds, validation cases (names and loaders) and parent
    model's record (``{"sha256", "provenance"}`` of ``--init-from``, {} for a fresh start)."""

    config: TrainConfig
    split: SeedSplit
    validation_names: tuple[str, ...]
    validators: tuple[Validator, ...]
    parent: dict
    real_cases: dict[str, tuple[str, ...]]


def generated_validator(make_case: Callable[[int], TrainingCase], seed: int) -> Validator:
    """The validator of generated case ``seed``."""
    def load() -> tuple[Prepared, np.ndarray]:
        case = make_case(seed)
        return prepare_phantom(case)[0], case.label
    return load


def validation_predictions(model: LoadedModel, validators: Sequence[Validator]) -> list[ValidationPrediction]:
    """Each validation case's region probabilities (full inference path), ready to be post-processed."""
    predictions = []
    for load in validators:
        prepared, truth = load()
        probs = predict(to_network_input(prepared.image, torch.device("cpu")), model).probs
        kept = replace(prepared, image=prepared.image[:, :0].copy())  # a copy: the image's memory is freed
        predictions.append(ValidationPrediction(probs, kept, truth))
    return predictions


def score(model: LoadedModel, validators: Sequence[Validator]) -> dict[str, float]:
    """Mean Dice per region of one model (inference path, post-processing included) on the validation cases."""
    return mean_dice(validation_predictions(model, validators), model.manifest.postprocessing)


def initial_network(config: TrainConfig) -> tuple[torch.nn.Module, dict]:
    """The network to train (deep-supervised, encoder frozen, where asked): fresh, or with the verified weights of
    ``config.init_from``, returned with that model's sha256 and provenance."""
    network = training_network(config.architecture, network_config(config),
                               uses_deep_supervision(config.architecture, config.deep_supervision))
    parent = {}
    if config.init_from:
        loaded = load_model(Path(config.init_from))
        found = loaded.manifest
        if found.architecture != config.architecture or found.config != network_config(config) or found.ensemble:
            raise WeightsError(f"{config.init_from}: is {found.architecture} {found.config}"
                               f"{' (an ensemble)' if found.ensemble else ''}, not {config.architecture} "
                               f"{network_config(config)}; cannot initialise from it")
        load_parent_weights(network, loaded.network.state_dict())
        parent = {"sha256": found.sha256, "provenance": found.provenance}
    elif config.freeze_encoder:
        raise SettingsError("--freeze-encoder needs --init-from: a frozen encoder keeps the weights it starts with")
    if config.freeze_encoder:
        freeze_encoder(network, config.architecture)
    return network, parent


def teacher(config: TrainConfig) -> torch.nn.Module | None:
    """With ``--thick-consistency``: the ``--init-from`` network, frozen, that thin patches are scored with."""
    if config.thick_consistency <= 0:
        return None
    network = load_model(Path(config.init_from)).network.eval()
    return network.requires_grad_(False)


def draft_manifest(config: TrainConfig) -> Manifest:
    """The run's manifest before export (no checksum, default post-processing, no provenance)."""
    return Manifest(name=Path(config.output).name, architecture=config.architecture, config=network_config(config),
                    roi_size=(config.roi_size,) * 3, sha256="", postprocessing=PostprocessParams())


def resumable_config(config: TrainConfig) -> dict:
    """The settings a checkpoint must share with the run that resumes it."""
    return {k: v for k, v in asdict(config).items() if k not in RESUMABLE_CHANGES}


def command_line() -> str:
    """The ``htcnns train`` command of this process, or "" when training was called from Python."""
    return "htcnns train " + shlex.join(sys.argv[2:]) if sys.argv[1:2] == ["train"] else ""


def write_run_config(config: TrainConfig, run: Run, resumed_at: int | None) -> None:
    """``OUTPUT/train-config.json``: the run's config, seed and seeds, written before any training step."""
    split = run.split
    record = {"config": asdict(config), "seed": config.seed, "command": command_line(),
              "real_cases": {k: list(v) for k, v in run.real_cases.items()},
              "training_seeds": list(split.train), "validation_seeds": list(split.validation),
              "validation_cases_from": f"the generator's {split.validation_source} sources",
              "fresh_training_seeds_from": split.first_renewal, "resumed_at_step": resumed_at,
              "started": datetime.datetime.now().isoformat(timespec="seconds"), "htcnns": __version__,
              "torch": torch.__version__}
    atomic_write_text(Path(config.output) / RUN_CONFIG_NAME, json.dumps(record, indent=2) + "\n")


def real_pools(config: TrainConfig) -> tuple[list[list[Sample]], list[RealCase], dict[str, tuple[str, ...]]]:
    """Per ``--data`` folder, the training samples of its cases; all held-out cases (``--folds``); and the case ids
    each folder gave to training and validation."""
    pools, held_out, used = [], [], {}
    for folder in config.real_data:
        train_cases, validation_cases = split_cases(load_real_cases(Path(folder)), config.folds, config.fold)
        if not train_cases:
            raise SettingsError(f"{folder}: no case left for training after holding out fold {config.fold}")
        pools.append([Sample(c.prepared.image, regions_on_prepared_grid(c)) for c in train_cases])
        held_out += validation_cases
        used[folder] = tuple(c.case_id for c in train_cases)
    return pools, held_out, used


def plan_run(config: TrainConfig) -> tuple[Run, list[list[Sample]], Callable[[int], TrainingCase] | None]:
    """The run's fixed parts, the real samples per folder and the generated-case maker (None without one)."""
    source_weights(config)  # refuses bad --data-weights before any data is read
    check_shares(config)
    pools, held_out, used = real_pools(config)
    real_folds = bool(config.real_data) and config.folds > 0
    split = split_seeds(config.seed, config.phantoms, config.validation_phantoms, 0 if real_folds else config.folds,
                        config.fold) if config.data else SeedSplit((), (), "", 0)
    make_case = case_maker(config) if config.data else None
    names: list[str] = [f"{config.data} seed {s}" for s in split.validation]
    validators: list[Validator] = []
    if split.validation:
        make_validation = case_maker(config, split.validation_source)
        validators = [generated_validator(make_validation, s) for s in split.validation]
    names += [c.case_id for c in held_out]
    validators += [lambda c=c: (c.prepared, c.labels) for c in held_out]
    used["validation"] = tuple(c.case_id for c in held_out)
    return Run(config, split, tuple(names), tuple(validators), {}, used), pools, make_case


def train(config: TrainConfig) -> Manifest:
    """Run (or resume) one training; export weights, manifest, model card and curves into ``config.output``."""
    folder, started = Path(config.output), time.perf_counter()
    run, pools, make_case = plan_run(config)
    split = run.split
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    network, parent = initial_network(config)
    run = replace(run, parent=parent)
    learner = make_learner(network, config)
    progress = load_checkpoint(folder, learner, resumable_config(config)) if config.resume else Progress()
    if not config.resume and (folder / CHECKPOINT_STATE).is_file():
        log.info("%s holds the checkpoint of an earlier run; starting afresh (--resume continues it)", folder)
    earlier_s = progress.elapsed_s
    write_run_config(config, run, progress.step if config.resume else None)

    def checkpoint(state: Progress) -> None:
        state.elapsed_s = round(earlier_s + time.perf_counter() - started, 1)
        save_checkpoint(folder, learner, state, resumable_config(config))
        write_curves(folder / CURVES_NAME, state.losses, state.evaluations)

    draft = draft_manifest(config)
    weights = source_weights(config) if config.data else (0.0, *source_weights(config))
    hooks = Hooks(renew=(lambda k: to_sample(make_case(split.first_renewal + k))) if make_case else None,
                  evaluate=(lambda net: score(LoadedModel(draft, net, folder), run.validators))
                  if run.validators else None,
                  checkpoint=checkpoint, fixed=tuple(pools), weights=weights, teacher=teacher(config))
    generated = make_samples(split.train, make_case) if make_case else []
    run_steps(learner, generated, config, progress, hooks)
    progress.elapsed_s = round(earlier_s + time.perf_counter() - started, 1)
    return export_run(learner.network, run, progress)


def export_run(network: torch.nn.Module, run: Run, progress: Progress) -> Manifest:
    """Score (after tuning, if asked) the plain network on the validation cases; write weights, manifest, model
    card and curves into the run's output folder."""
    config, draft = run.config, draft_manifest(run.config)
    model = LoadedModel(draft, plain_network(network, config.architecture, draft.config), Path(config.output))
    predictions = validation_predictions(model, run.validators)
    params, tuning = draft.postprocessing, {}
    if config.tune_et_threshold and predictions:
        chosen, scores = tune_et_threshold(predictions, params)
        params = replace(params, et_threshold=chosen)
        tuning = {"chosen": chosen, "mean_et_dice": {str(t): round(s, 4) for t, s in scores.items()},
                  "validation_cases": list(run.validation_names)}
    dice = mean_dice(predictions, params) if predictions else {}
    per_case = {name: case_dice(p, params) for name, p in zip(run.validation_names, predictions, strict=True)}
    if predictions:
        progress.evaluations.append({"step": progress.step, "dice": dice})
    real = bool(run.real_cases.get("validation"))  # held-out real cases: the Dice is not synthetic
    provenance = run_provenance(run, progress) | {"validation_dice": dice, "et_threshold_tuning": tuning,
                                                  "validation_cases": list(run.validation_names),
                                                  "validation_dice_per_case": per_case}
    if run.split.validation and not real:
        provenance["synthetic_validation_dice"] = dice
    folder = Path(config.output)
    manifest = save_model(model.network, replace(draft, postprocessing=params, provenance=provenance), folder)
    (folder / "MODEL_CARD.md").write_text(model_card(manifest), encoding="utf-8")
    write_curves(folder / CURVES_NAME, progress.losses, progress.evaluations)
    return manifest


def run_provenance(run: Run, progress: Progress) -> dict:
    """The manifest's record of a finished run (validation Dice and ET tuning are added by the caller)."""
    config, split = run.config, run.split
    renewed = renewals_before(config.steps, config.refresh_every)
    last_seed = split.first_renewal + renewed - 1 if renewed else (split.train or (0,))[-1]
    return {
        "data": data_description(config, (split.train or (0,))[0], last_seed, run.real_cases),
        "command": command_line(),
        "config": asdict(config),
        "seed": config.seed,
        "steps": config.steps,
        "initialised_from": run.parent,
        "deep_supervision": uses_deep_supervision(config.architecture, config.deep_supervision),
        "frozen_encoder": list(ENCODER_PARAMETERS[config.architecture]) if config.freeze_encoder else [],
        "fold": {"folds": config.folds, "fold": config.fold} if config.folds else {},
        "wall_time_s": progress.elapsed_s,
        "final_loss_mean_last_20": round(float(np.mean(progress.losses[-20:])), 4),
        "validation_seeds": list(split.validation),
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {config.threads} CPU threads",
    }


def data_description(config: TrainConfig, first_seed: int, last_seed: int,
                     real_cases: dict[str, tuple[str, ...]] | None = None) -> str:
    """One line on the training data of a run, with licences where the data derive from third-party files."""
    parts = [describe_data(config.data, first_seed, last_seed)] if config.data else []
    if config.data in ("synthseg", "synthseg2") and config.domain != "adult":
        parts[0] = f"{parts[0]}; {config.domain}-like domain (htcnns.training.synthseg.domains)"
    for folder in config.real_data:
        cases = (real_cases or {}).get(folder, ())
        parts.append(f"real labelled cases from {Path(folder).name}/ ({len(cases)}: {', '.join(cases)})")
    if config.real_data:
        parts.append(f"patch shares {', '.join(f'{w:.2f}' for w in source_weights(config))}; "
                     f"{REAL_DATA_TERMS}")
    text = "; ".join(parts)
    return f"{text} (fold {config.fold} of {config.folds} held out)" if config.folds else text


_HELP = {
    "phantoms": "number of generated training cases (phantoms or synthseg cases) held in memory; with --folds, "
                "the pool that is split into folds",
    "validation_phantoms": "number of generated validation cases scored after training (without --folds)",
    "refresh_every": "replace the oldest training case by a freshly generated one every N steps (0: never)",
    "checkpoint_every": "write OUTPUT/checkpoint.safetensors + checkpoint.json and the curves every N steps "
                        "(0: never)",
    "validate_every": "also score the validation cases every N steps, for the Dice curve (0: only at the end)",
    "folds": "k-fold cross-validation over the pool of --phantoms cases (0: none); pool case j (seed 1000*SEED+j) "
             "is in fold j mod K",
    "fold": "with --folds K: the fold (0..K-1) held out for validation",
}


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``htcnns train``."""
    defaults = TrainConfig(architecture="unet", output="")
    parser.add_argument("--architecture", choices=sorted(PRESETS), required=True)
    parser.add_argument("--output", type=Path, required=True, help="model folder to write (e.g. models/unet)")
    for name in ("steps", "seed", "phantoms", "validation_phantoms", "patch_size", "batch_size", "roi_size",
                 "threads", "refresh_every", "checkpoint_every", "validate_every", "folds", "fold"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name),
                            help=_HELP.get(name))
    parser.add_argument("--data", action="append", default=None, metavar="phantoms|synthseg|synthseg2|DIR",
                        help="training cases, repeatable to mix sources: procedural phantoms, SynthSeg-style cases "
                             "(synthseg: SRI24 atlas + real tumour label maps; synthseg2: the 20 SynthSeg anatomies "
                             "registered to SRI24, one intensity per structure; read from --atlas), or a folder of "
                             "labelled cases (BraTS 2021/2023 names plus <id>-seg / <id>_seg; labels 1/2/4 or 1/2/3); "
                             "default phantoms")
    parser.add_argument("--data-weights", type=_weights, default=(),
                        help="share of patches from each --data source, generated kind first, e.g. 3,1 "
                             "(default: equal shares)")
    parser.add_argument("--foreground-share", type=float, default=defaults.foreground_share,
                        help="share of patches centred on a tumour voxel, the rest anywhere (default 2/3; "
                             "nnU-Net uses 1/3)")
    parser.add_argument("--thick-slices", type=float, default=defaults.thick_slices,
                        help="chance of each channel of a training patch to be re-sliced 2-7 mm thick along one "
                             "axis and interpolated back (robustness to a hospital's thick-slice sequences after "
                             "--preprocess; default 0)")
    parser.add_argument("--thick-consistency", type=float, default=defaults.thick_consistency,
                        help="with --init-from and --thick-slices: weight of a second loss term, the network on "
                             "each patch against the starting network (frozen) on the same patch without thick "
                             "slices, so that thick and thin sequences segment alike (default 0: off)")
    parser.add_argument("--atlas", type=str, default="",
                        help="shared data folder holding sri24-brats-space/ and deepmedic-brats2015/ (for --data "
                             "synthseg; default $HTCNNS_SHARED_DATA, else ../shared/data next to this checkout)")
    parser.add_argument("--domain", choices=sorted(DOMAINS), default=defaults.domain,
                        help="with --data synthseg/synthseg2: the population the cases imitate (adult glioma, "
                             "paediatric-like, sub-Saharan-Africa-like; see htcnns.training.synthseg.domains)")
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--preset", choices=["compact", "paper"], default=defaults.preset)
    parser.add_argument("--init-from", type=str, default="",
                        help="model folder whose verified weights start the training (continue or fine-tune)")
    add_switches(parser, defaults)
    parser.set_defaults(run=run_train)


def add_switches(parser: argparse.ArgumentParser, defaults: TrainConfig) -> None:
    """The on/off options of ``htcnns train``."""
    parser.add_argument("--deep-supervision", action=argparse.BooleanOptionalAction,
                        default=defaults.deep_supervision,
                        help="unet only: also supervise the decoder at lower resolutions (compact: 1/2 and 1/4, "
                             "loss weights 4/7, 2/7, 1/7); the exported network is the plain U-Net (default: on)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from OUTPUT/checkpoint.* (written by a run with the same options) to --steps")
    parser.add_argument("--freeze-encoder", action="store_true",
                        help="with --init-from: keep the encoder's weights fixed (U-Nets: the contracting conv "
                             "stages; TransBTS: CNN stages, token projection, position embedding and Transformer)")
    parser.add_argument("--tune-et-threshold", action="store_true",
                        help="choose the ET threshold (0.50..0.90) with the best mean ET Dice on the validation "
                             "cases and store it in the manifest")


def _weights(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated numbers, e.g. 3,1") from error


def split_data(values: list[str] | None) -> tuple[str, tuple[str, ...]]:
    """``--data`` values as (generated kind or "", real folders); phantoms when none is given."""
    values = values or ["phantoms"]
    kinds = [v for v in values if v in DATA_KINDS]
    if len(kinds) > 1:
        raise SettingsError(f"--data: give at most one generated kind ({' or '.join(DATA_KINDS)}), got {kinds}")
    return (kinds[0] if kinds else ""), tuple(v for v in values if v not in DATA_KINDS)


def run_train(args: argparse.Namespace) -> int:
    """CLI adapter: build the config from the arguments and train."""
    fields = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__}
    data, real_data = split_data(args.data)
    fields |= {"data": data, "real_data": real_data, "output": str(args.output)}
    manifest = train(TrainConfig(**fields))
    names = manifest.provenance["validation_cases"]
    print(f"wrote {args.output}: validation Dice {manifest.provenance['validation_dice'] or '(no validation cases)'}"
          f"{' on ' + ', '.join(names) if names else ''}")
    return 0
