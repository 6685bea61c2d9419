"""``htcnns train``: train one compact network on synthetic data, score it and export it as frozen weights.

Data (``--data``): the procedural phantoms of ``htcnns.synth``, or SynthSeg-style cases of ``htcnns.synthseg``
(SRI24 anatomy + real tumour shapes, random physics-ordered contrasts; needs ``--atlas``, the shared data
folder). Training data goes through the same ``preprocess`` as inference. Loss: Dice + binary cross-entropy on the
three nested region channels (MONAI ``DiceCELoss``); Adam; cosine annealing; random flips and intensity
shift/scale. The exported model is scored on held-out phantoms with the full inference path.
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
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.losses import DiceCELoss
from tqdm import tqdm

from htcnns.errors import WeightsError
from htcnns.labels import REGIONS, region_dice, regions_from_labels
from htcnns.networks import PRESETS, build_network
from htcnns.pipeline import model_labels
from htcnns.postprocess import PostprocessParams
from htcnns.predict import to_network_input
from htcnns.preprocess import Prepared, preprocess, restore_input_grid, to_prepared_grid
from htcnns.synth import BRATS_SHAPE, Phantom, make_phantom
from htcnns.synthseg import HELD_OUT, SyntheticCase, default_data_root, generate, load_sources
from htcnns.validate import LoadedCase
from htcnns.weights import LoadedModel, Manifest, load_model, save_model

log = logging.getLogger(__name__)

VALIDATION_SEED_OFFSET = 100_000
DATA_KINDS = ("phantoms", "synthseg")

TrainingCase = Phantom | SyntheticCase
"""A generated case: ``image`` float32 (4, X, Y, Z), ``label`` uint8 (X, Y, Z), ``affine`` (4, 4)."""


@dataclass(frozen=True)
class TrainConfig:
    """One training run; written into the manifest's provenance."""

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
    refresh_every: int = 0


@dataclass(frozen=True)
class Sample:
    """A preprocessed case: image float32 (4, x, y, z); regions (3, x, y, z) in {0, 1}, uint8 or float32."""

    image: np.ndarray
    regions: np.ndarray


def prepare_phantom(phantom: TrainingCase) -> tuple[Prepared, np.ndarray]:
    """Run a generated case through inference preprocessing; returns it and its labels on the prepared grid."""
    reference = nib.Nifti1Image(np.zeros(phantom.label.shape, np.uint8), phantom.affine)
    prepared = preprocess(LoadedCase("phantom", phantom.image, reference))
    return prepared, to_prepared_grid(phantom.label, prepared)


def case_maker(config: TrainConfig, split: str = "train") -> Callable[[int], TrainingCase]:
    """seed -> generated case, for ``config.data``; synthseg sources load here (once), so a missing atlas
    fails before any training. ``split`` "validation" draws synthseg tumours from the held-out label maps."""
    if config.data == "synthseg":
        sources = load_sources(Path(config.atlas) if config.atlas else default_data_root(), split)
        return lambda seed: generate(seed, sources)
    if config.data != "phantoms":
        raise ValueError(f"data must be one of {DATA_KINDS}, got {config.data!r}")
    return lambda seed: make_phantom(seed, shape=config.phantom_shape)


def to_sample(case: TrainingCase) -> Sample:
    """A training sample: the preprocessed case and its nested regions."""
    prepared, labels = prepare_phantom(case)
    return Sample(prepared.image, regions_from_labels(labels).astype(np.uint8))  # a quarter of float32's memory


def make_samples(seeds: range, make_case: Callable[[int], TrainingCase]) -> list[Sample]:
    """Training samples from the cases ``make_case`` generates for ``seeds``."""
    return [to_sample(make_case(seed)) for seed in tqdm(seeds, desc="cases", unit="case", disable=None)]


def random_patch(sample: Sample, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A (4, s, s, s) image patch and its (3, s, s, s) target; two in three are centred on tumour.

    Augmentation: random flip of each axis, per-channel intensity scale (0.9-1.1) and shift (+-0.1).
    """
    shape = np.array(sample.image.shape[1:])
    if rng.random() < 2 / 3:
        tumour = np.argwhere(sample.regions[0] > 0)
        centre = tumour[rng.integers(len(tumour))]
    else:
        centre = rng.integers(0, shape)
    start = np.clip(centre - size // 2, 0, np.maximum(shape - size, 0))
    box = tuple(slice(s, s + size) for s in start)
    image, target = sample.image[(slice(None), *box)], sample.regions[(slice(None), *box)]
    pad = [(0, 0)] + [(0, size - n) for n in image.shape[1:]]
    image, target = np.pad(image, pad), np.pad(target, pad)
    for axis in (1, 2, 3):
        if rng.random() < 0.5:
            image, target = np.flip(image, axis), np.flip(target, axis)
    scale = rng.uniform(0.9, 1.1, (4, 1, 1, 1)).astype(np.float32)
    shift = rng.uniform(-0.1, 0.1, (4, 1, 1, 1)).astype(np.float32)
    return np.ascontiguousarray(image * scale + shift), np.ascontiguousarray(target, dtype=np.float32)


def network_config(config: TrainConfig) -> dict:
    """The preset's constructor arguments, with the ROI where the architecture takes one."""
    preset = dict(PRESETS[config.architecture][config.preset])
    if "roi_size" in preset:
        preset["roi_size"] = config.roi_size
    return preset


def fit(network: torch.nn.Module, samples: list[Sample], config: TrainConfig,
        renew: Callable[[int], Sample] | None = None) -> list[float]:
    """Train in place; returns the loss of every step.

    With ``renew`` and ``config.refresh_every`` > 0, every ``refresh_every`` steps the oldest sample of the
    pool is replaced by ``renew(k)`` (k = 0, 1, ...), so training sees fresh generated cases.
    """
    rng = np.random.default_rng(config.seed)
    samples = list(samples)
    loss_fn = DiceCELoss(sigmoid=True, smooth_nr=1e-5, smooth_dr=1e-5)
    optimizer = torch.optim.Adam(network.parameters(), lr=config.learning_rate, weight_decay=1e-5)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.steps)
    losses = []
    network.train()
    progress = tqdm(range(config.steps), desc=f"train {config.architecture}", unit="step", disable=None)
    for step in progress:
        if renew is not None and config.refresh_every > 0 and step > 0 and step % config.refresh_every == 0:
            renewal = step // config.refresh_every - 1
            samples[renewal % len(samples)] = renew(renewal)
        pairs = [random_patch(samples[rng.integers(len(samples))], config.patch_size, rng)
                 for _ in range(config.batch_size)]
        images = torch.from_numpy(np.stack([p[0] for p in pairs]))
        targets = torch.from_numpy(np.stack([p[1] for p in pairs]))
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(network(images), targets)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        progress.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        if step % 50 == 0 or step == config.steps - 1:
            log.info("%s step %d/%d, loss %.4f", config.architecture, step + 1, config.steps, np.mean(losses[-20:]))
    return losses


def score(model: LoadedModel, seeds: range, make_case: Callable[[int], TrainingCase]) -> dict[str, float]:
    """Mean Dice per region of one model (inference path, post-processing included) on the cases of ``seeds``."""
    per_case = []
    for seed in seeds:
        phantom = make_case(seed)
        prepared, _ = prepare_phantom(phantom)
        image = to_network_input(prepared.image, torch.device("cpu"))
        labels = restore_input_grid(model_labels(image, prepared, model), prepared)
        per_case.append(region_dice(labels, phantom.label))
    return {region: round(float(np.mean([c[region] for c in per_case])), 4) for region in REGIONS}


def initial_network(config: TrainConfig) -> tuple[torch.nn.Module, dict]:
    """A fresh network, or the verified weights of ``config.init_from`` (with that model's provenance)."""
    if not config.init_from:
        return build_network(config.architecture, network_config(config)), {}
    parent = load_model(Path(config.init_from))
    if parent.manifest.architecture != config.architecture or parent.manifest.config != network_config(config):
        raise WeightsError(f"{config.init_from}: is {parent.manifest.architecture} {parent.manifest.config}, "
                           f"not {config.architecture} {network_config(config)}; cannot initialise from it")
    return parent.network.train(), {"sha256": parent.manifest.sha256, "provenance": parent.manifest.provenance}


def train(config: TrainConfig) -> Manifest:
    """Run one training, export weights + manifest + model card into ``config.output``."""
    make_case, make_validation = case_maker(config), case_maker(config, "validation")
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    start = time.perf_counter()
    network, parent = initial_network(config)
    first = config.seed * 1000
    samples = make_samples(range(first, first + config.phantoms), make_case)
    losses = fit(network, samples, config, lambda k: to_sample(make_case(first + config.phantoms + k)))
    renewed = (config.steps - 1) // config.refresh_every if config.refresh_every > 0 else 0
    network.eval()
    wall_time = time.perf_counter() - start
    folder = Path(config.output)
    draft = Manifest(name=folder.name, architecture=config.architecture, config=network_config(config),
                     roi_size=(config.roi_size,) * 3, sha256="", postprocessing=PostprocessParams())
    validation = range(VALIDATION_SEED_OFFSET + config.seed * 1000,
                       VALIDATION_SEED_OFFSET + config.seed * 1000 + config.validation_phantoms)
    dice = score(LoadedModel(draft, network, folder), validation, make_validation)
    provenance = {
        "data": data_description(config, first, first + config.phantoms + renewed - 1),
        "command": "htcnns train " + shlex.join(sys.argv[2:]) if sys.argv[1:2] == ["train"] else "",
        "config": asdict(config),
        "seed": config.seed,
        "steps": config.steps,
        "initialised_from": parent,
        "wall_time_s": round(wall_time, 1),
        "final_loss_mean_last_20": round(float(np.mean(losses[-20:])), 4),
        "synthetic_validation_dice": dice,
        "validation_seeds": [validation.start, validation.stop - 1],
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {config.threads} CPU threads",
    }
    manifest = save_model(network, replace(draft, provenance=provenance), folder)
    (folder / "MODEL_CARD.md").write_text(model_card(manifest))
    return manifest


SYNTHSEG_LICENCES = ("SRI24 atlas: CC BY-SA 3.0 (Rohlfing et al. 2010); DeepMedic BraTS 2015 subset: "
                     "CC BY-NC-SA 3.0, non-commercial use only (Menze et al. 2015)")


def data_description(config: TrainConfig, first_seed: int, last_seed: int) -> str:
    """One line on the training data of a run, with licences where the data derive from third-party files."""
    if config.data == "synthseg":
        return (f"SynthSeg-style synthetic cases from htcnns.synthseg, seeds {first_seed}..{last_seed}: SRI24 atlas "
                f"anatomy, tumour shapes from DeepMedic BraTS 2015 expert label maps ({', '.join(HELD_OUT)} held out) "
                f"or procedural, random contrasts; no real image intensities. Licences: {SYNTHSEG_LICENCES}")
    return f"synthetic phantoms from htcnns.synth, seeds {first_seed}..{last_seed}; no real scans"


def _data_paragraph(data: str) -> str:
    """The model card's paragraph on what the network was trained on."""
    if data.startswith("SynthSeg"):
        return (f"**Trained on synthetic images only** ({data}). It has never seen a real MRI intensity; the "
                "shapes of its tumours come from real expert label maps. Its weights derive from the SRI24 atlas "
                "(CC BY-SA 3.0) and the DeepMedic BraTS 2015 label maps (CC BY-NC-SA 3.0): non-commercial use "
                "only. Do not use it for any clinical conclusion.")
    return (f"**Trained on synthetic phantoms only** ({data}). It has never seen a real MRI scan or a real\n"
            "tumour: it segments the project's phantoms and is a placeholder until weights trained on realistic "
            "data land.\nDo not use it for any clinical or research conclusion on real scans.")


def model_card(manifest: Manifest) -> str:
    """A short human-readable card for a model folder."""
    prov = manifest.provenance
    dice = ", ".join(f"{k} {v:.3f}" for k, v in prov["synthetic_validation_dice"].items())
    return f"""# Model card: {manifest.name} ({manifest.architecture}, compact)

**What it is.** A compact {manifest.architecture} network of HT-CNNs, output channels WT, TC, ET (sigmoid),
input channels t1n, t1c, t2w, t2f (z-scored over the brain), sliding-window ROI {manifest.roi_size}.

{_data_paragraph(prov["data"])}

| item | value |
|---|---|
| command | `{prov["command"]}` |
| seed | {prov["seed"]} |
| steps | {prov["steps"]} (batch {prov["config"]["batch_size"]}, patch {prov["config"]["patch_size"]}^3) |
| initialised from | {_parent_summary(prov.get("initialised_from") or {})} |
| wall time | {prov["wall_time_s"]} s on {prov["machine"]} |
| Dice on held-out synthetic cases, seeds {prov["validation_seeds"]} | {dice} |
| date | {prov["date"]} |
| weights sha256 | `{manifest.sha256}` |

Post-processing: {json.dumps(asdict(manifest.postprocessing))}.
{_roi_change_note(prov.get("inference_roi_change"))}"""


def _roi_change_note(change: dict | None) -> str:
    """A paragraph on an inference ROI set after training, with the Dice measured at both sizes."""
    if not change:
        return ""
    return (f"\n**Inference ROI changed after training** from {change['from']}^3 to {change['to']}^3: "
            f"{change['reason']}. Dice on held-out phantoms {change['validation_seeds']} (synthetic): "
            f"{change['synthetic_dice_after']} at the new ROI, {change['synthetic_dice_before']} at the old.\n")


def _parent_summary(parent: dict) -> str:
    """One cell describing the model a training started from, chained back to the first run."""
    if not parent:
        return "random initialisation"
    earlier = parent["provenance"]
    return (f"`{parent['sha256'][:12]}…` after `{earlier['command']}` ({earlier['wall_time_s']} s), itself from "
            f"{_parent_summary(earlier.get('initialised_from') or {})}")


_HELP = {
    "phantoms": "number of generated training cases (phantoms or synthseg cases) held in memory",
    "validation_phantoms": "number of generated validation cases scored after training",
    "refresh_every": "replace the oldest training case by a freshly generated one every N steps (0: never)",
}


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``htcnns train``."""
    defaults = TrainConfig(architecture="unet", output="")
    parser.add_argument("--architecture", choices=sorted(PRESETS), required=True)
    parser.add_argument("--output", type=Path, required=True, help="model folder to write (e.g. models/unet)")
    for name in ("steps", "seed", "phantoms", "validation_phantoms", "patch_size", "batch_size", "roi_size",
                 "threads", "refresh_every"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name),
                            help=_HELP.get(name))
    parser.add_argument("--data", choices=DATA_KINDS, default=defaults.data,
                        help="training cases: procedural phantoms, or SynthSeg-style cases from the SRI24 atlas and "
                             "real tumour label maps (read from --atlas)")
    parser.add_argument("--atlas", type=str, default="",
                        help="shared data folder holding sri24-brats-space/ and deepmedic-brats2015/ (for --data "
                             "synthseg; default $HTCNNS_SHARED_DATA, else ../shared/data next to this checkout)")
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--preset", choices=["compact", "paper"], default=defaults.preset)
    parser.add_argument("--init-from", type=str, default="",
                        help="model folder whose verified weights start the training (continue or fine-tune)")
    parser.set_defaults(run=run_train)


def run_train(args: argparse.Namespace) -> int:
    """CLI adapter: build the config from the arguments and train."""
    fields = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__}
    manifest = train(TrainConfig(**{**fields, "output": str(args.output)}))
    print(f"wrote {args.output}: synthetic validation Dice {manifest.provenance['synthetic_validation_dice']}")
    return 0
