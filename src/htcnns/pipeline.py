"""segment_case(): the stages in order; segment_folder(): every case of a folder, one failure never stops the rest."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from tqdm import tqdm

from htcnns.cases import Case, find_cases
from htcnns.errors import HtcnnsError, InputError
from htcnns.fuse import FusionMethod, fuse_label_maps
from htcnns.io import read_volume, write_label_map
from htcnns.labels import BRATS2021_ET, Label
from htcnns.postprocess import postprocess
from htcnns.predict import predict, resolve_device, to_network_input
from htcnns.preprocess import Prepared, preprocess, restore_input_grid
from htcnns.validate import validate_case
from htcnns.weights import LoadedModel, find_model_folders, load_model

log = logging.getLogger(__name__)


class LabelConvention(StrEnum):
    """Output label values: BraTS 2023 (ET = 3) or BraTS 2021 (ET = 4)."""

    BRATS2023 = "brats2023"
    BRATS2021 = "brats2021"


@dataclass(frozen=True)
class Settings:
    """What a user can change about a run (the CLI fills it)."""

    device: str = "auto"
    fusion: FusionMethod = FusionMethod.STAPLE
    labels: LabelConvention = LabelConvention.BRATS2023
    sw_batch_size: int = 1


@dataclass(frozen=True)
class CaseResult:
    """Outcome of one case: ``error`` is one sentence, empty on success."""

    case_id: str
    output: Path | None
    error: str
    seconds: float

    @property
    def ok(self) -> bool:
        """True when the case was segmented and written."""
        return not self.error


def default_models_root() -> Path:
    """``$HTCNNS_MODELS`` if set, else the ``models/`` folder of this checkout."""
    return Path(os.environ.get("HTCNNS_MODELS", Path(__file__).resolve().parents[2] / "models"))


def load_models(models_root: Path, device: str = "auto") -> list[LoadedModel]:
    """Verify and load every model folder under ``models_root`` onto the resolved device."""
    target = resolve_device(device)
    return [load_model(folder, target) for folder in find_model_folders(models_root)]


def model_labels(image: torch.Tensor, prepared: Prepared, model: LoadedModel, sw_batch_size: int = 1) -> np.ndarray:
    """One model's post-processed label map, uint8 (x, y, z) on the prepared grid.

    Args:
        image: the prepared image as a (1, 4, x, y, z) tensor on the model's device (made once per case).
    """
    probs = predict(image, model, sw_batch_size=sw_batch_size).probs
    return postprocess(probs, model.manifest.postprocessing, brain=prepared.brain)


def segment_case(case: Case, models: Sequence[LoadedModel], settings: Settings) -> tuple[np.ndarray, nib.Nifti1Image]:
    """Segment one complete case.

    Returns:
        uint8 (X, Y, Z) BraTS 2023 label map on the input's voxel grid, and the image whose geometry it shares.

    Raises:
        InputError: the case's files are missing, unreadable or inconsistent.
    """
    if case.problem:
        raise InputError(f"{case.case_id}: {case.problem}")
    volumes = {modality: read_volume(path, case.case_id) for modality, path in case.paths.items()}
    loaded = validate_case(case.case_id, volumes)
    prepared = preprocess(loaded)
    device = next(models[0].network.parameters()).device
    image = to_network_input(prepared.image, device)
    per_model = [model_labels(image, prepared, model, settings.sw_batch_size) for model in models]
    fused = fuse_label_maps(per_model, settings.fusion, device=str(device))
    return restore_input_grid(fused, prepared), loaded.reference


def convert_labels(labels: np.ndarray, convention: LabelConvention) -> np.ndarray:
    """BraTS 2023 labels as written: unchanged, or ET moved to 4 for BraTS 2021."""
    if convention == LabelConvention.BRATS2021:
        return np.where(labels == Label.ET, np.uint8(BRATS2021_ET), labels).astype(np.uint8)
    return labels


def run_case(case: Case, models: Sequence[LoadedModel], settings: Settings, output_dir: Path) -> CaseResult:
    """Segment and write one case, turning any failure into a one-sentence CaseResult."""
    start = time.perf_counter()
    output = output_dir / f"{case.case_id}.nii.gz"
    try:
        labels, reference = segment_case(case, models, settings)
        write_label_map(convert_labels(labels, settings.labels), reference, output)
    except HtcnnsError as error:
        return CaseResult(case.case_id, None, str(error), time.perf_counter() - start)
    except Exception as error:  # a bug or a resource failure: keep the batch going, keep the traceback in logs
        log.debug("traceback of %s", case.case_id, exc_info=True)
        message = f"{case.case_id}: unexpected {type(error).__name__}: {error} (rerun with --verbose for details)"
        return CaseResult(case.case_id, None, message, time.perf_counter() - start)
    return CaseResult(case.case_id, output, "", time.perf_counter() - start)


def segment_folder(
    input_dir: Path, output_dir: Path, models: Sequence[LoadedModel], settings: Settings
) -> list[CaseResult]:
    """Segment every case found under ``input_dir`` into ``output_dir/<case-id>.nii.gz``.

    Raises:
        InputError: ``input_dir`` is not a folder or holds no BraTS-named case.
    """
    if not input_dir.is_dir():
        raise InputError(f"input folder {input_dir} does not exist or is not a folder")
    cases = find_cases(input_dir)
    if not cases:
        raise InputError(
            f"no cases found under {input_dir}: expected BraTS 2023 names (<id>-t1n/-t1c/-t2w/-t2f.nii.gz) "
            "or BraTS 2021 names (<id>_t1/_t1ce/_t2/_flair.nii.gz)"
        )
    output_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for case in tqdm(cases, desc="cases", unit="case", disable=None):
        result = run_case(case, models, settings, output_dir)
        if result.ok:
            log.info("%s -> %s (%.1f s)", case.case_id, result.output, result.seconds)
        else:
            log.error("%s", result.error)
        results.append(result)
    return results
