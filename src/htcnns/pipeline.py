"""segment_case(): the stages in order; segment_folder(): every case of a folder, one failure never stops the rest.

Batch rules: each case runs in isolation; any exception, a ``case_timeout`` or a CUDA out-of-memory fails that
case alone, with one sentence in the log and the report. Out of GPU memory, a case is retried once with one window
per forward pass and blending and fusion on the CPU. An output that already exists and validates is kept, so a
rerun resumes (``overwrite`` redoes it). ``OUT/htcnns-report.json`` (report.py) is rewritten after every case.
SIGTERM/SIGINT (interrupts.py) stop the batch: the case in flight writes nothing and the report says so.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from tqdm import tqdm

from htcnns.cases import Case, case_id_problem, display_id, find_cases
from htcnns.errors import CaseTimeout, HtcnnsError, InputError, OutputError
from htcnns.fuse import FusionMethod, fuse_label_maps
from htcnns.interrupts import deadline
from htcnns.io import PARTIAL_PREFIX, error_reason, read_volume, remove_partial_files, write_label_map
from htcnns.labels import LabelConvention, convert_labels, legal_labels
from htcnns.postprocess import postprocess
from htcnns.predict import predict, resolve_device, to_network_input
from htcnns.preprocess import Prepared, preprocess, restore_input_grid
from htcnns.report import REPORT_NAME, CaseResult, Report, Status, describe_device, model_entries
from htcnns.validate import output_problem, validate_case
from htcnns.weights import LoadedModel, find_model_folders, load_model

__all__ = ["CaseResult", "LabelConvention", "Settings", "Status", "segment_case", "segment_folder"]

log = logging.getLogger(__name__)

LOW_MEMORY_NOTE = "retried after CUDA ran out of memory, with --sw-batch-size 1 and blending on the CPU"


@dataclass(frozen=True)
class Settings:
    """What a user can change about a run (the CLI fills it).

    case_timeout: seconds of wall clock one case may take (None: no limit).
    overwrite: segment every case again instead of keeping valid outputs of an earlier run.
    low_memory: blend windows and fuse on the CPU (used by the retry after a CUDA out-of-memory).
    """

    device: str = "auto"
    fusion: FusionMethod = FusionMethod.STAPLE
    labels: LabelConvention = LabelConvention.BRATS2023
    sw_batch_size: int = 1
    case_timeout: float | None = None
    overwrite: bool = False
    low_memory: bool = False


def default_models_root() -> Path:
    """``$HTCNNS_MODELS`` if set, else the ``models/`` folder of this checkout."""
    return Path(os.environ.get("HTCNNS_MODELS", Path(__file__).resolve().parents[2] / "models"))


def load_models(models_root: Path, device: str = "auto") -> list[LoadedModel]:
    """Verify and load every model folder under ``models_root`` onto the resolved device."""
    target = resolve_device(device)
    return [load_model(folder, target) for folder in find_model_folders(models_root)]


def model_labels(image: torch.Tensor, prepared: Prepared, model: LoadedModel, sw_batch_size: int = 1,
                 stitch_device: str | None = None) -> np.ndarray:
    """One model's post-processed label map, uint8 (x, y, z) on the prepared grid.

    Args:
        image: the prepared image as a (1, 4, x, y, z) tensor on the model's device (made once per case).
        stitch_device: where windows are blended (None: the image's device).
    """
    probs = predict(image, model, sw_batch_size=sw_batch_size, stitch_device=stitch_device).probs
    return postprocess(probs, model.manifest.postprocessing, brain=prepared.brain)


def segment_case(case: Case, models: Sequence[LoadedModel], settings: Settings) -> tuple[np.ndarray, nib.Nifti1Image]:
    """Segment one complete case.

    Returns:
        uint8 (X, Y, Z) BraTS 2023 label map on the input's voxel grid, and the image whose geometry it shares.

    Raises:
        InputError: the case's files are missing, unreadable or inconsistent.
    """
    if case.problem:
        raise InputError(f"{display_id(case.case_id)}: {case.problem}")
    volumes = {modality: read_volume(path, case.case_id) for modality, path in case.paths.items()}
    loaded = validate_case(case.case_id, volumes)
    prepared = preprocess(loaded)
    device = next(models[0].network.parameters()).device
    image = to_network_input(prepared.image, device)
    stitch = "cpu" if settings.low_memory else None
    per_model = [model_labels(image, prepared, model, settings.sw_batch_size, stitch) for model in models]
    fused = fuse_label_maps(per_model, settings.fusion, device=stitch or str(device))
    return restore_input_grid(fused, prepared), loaded.reference


def segment_with_retry(case: Case, models: Sequence[LoadedModel],
                       settings: Settings) -> tuple[np.ndarray, nib.Nifti1Image, str]:
    """segment_case, retried once with low-memory settings when CUDA runs out of memory.

    Returns:
        The label map, its reference image, and a note ("" or LOW_MEMORY_NOTE when the retry was needed).
    """
    try:
        return (*segment_case(case, models, settings), "")
    except torch.cuda.OutOfMemoryError:  # leaving the except block frees the failed attempt's tensors
        if settings.low_memory:
            raise
        log.warning("%s: CUDA out of memory; retrying with --sw-batch-size 1 and blending on the CPU", case.case_id)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    low = replace(settings, sw_batch_size=1, low_memory=True)
    return (*segment_case(case, models, low), LOW_MEMORY_NOTE)


def output_path(output_dir: Path, case_id: str) -> Path:
    """``output_dir/<case-id>.nii.gz``; an id that would not name a plain file there is an OutputError."""
    problem = case_id_problem(case_id)
    if problem:
        raise OutputError(f"{display_id(case_id)}: {problem}")
    return output_dir / f"{case_id}.nii.gz"


def run_case(case: Case, models: Sequence[LoadedModel], settings: Settings, output_dir: Path) -> CaseResult:
    """Segment and write one case, turning any failure (timeout and out-of-memory included) into one sentence."""
    start = time.perf_counter()
    try:
        with deadline(settings.case_timeout):
            labels, reference, note = segment_with_retry(case, models, settings)
            output = output_path(output_dir, case.case_id)
            write_label_map(convert_labels(labels, settings.labels), reference, output)
    except (Exception, CaseTimeout) as error:
        log.debug("traceback of %s", display_id(case.case_id), exc_info=True)
        sentence = failure_sentence(case.case_id, error, settings)
        return CaseResult(case.case_id, Status.FAILED, sentence, time.perf_counter() - start)
    return CaseResult(case.case_id, Status.OK, "", time.perf_counter() - start, output, note)


def failure_sentence(case_id: str, error: BaseException, settings: Settings) -> str:
    """One sentence, starting with the case id, saying why the case failed and what to do."""
    shown = display_id(case_id)
    if isinstance(error, CaseTimeout):
        return (f"{shown}: stopped after {settings.case_timeout:g} s, the limit set by --case-timeout; raise the "
                "limit or check this case (its files may be unusually large).")
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return (f"{shown}: the GPU ran out of memory, even with --sw-batch-size 1 and blending on the CPU; "
                "free the GPU or run with --device cpu.")
    if isinstance(error, MemoryError):
        return f"{shown}: ran out of memory (RAM); close other programs or segment this case on a larger machine."
    if isinstance(error, HtcnnsError):
        message = str(error)
        return message if message.startswith(f"{shown}: ") else f"{shown}: {message}"
    return (f"{shown}: unexpected {type(error).__name__}: {error_reason(error)} "
            "(rerun with --verbose for the traceback).")


def kept_output(case: Case, output_dir: Path, settings: Settings) -> Path | None:
    """The case's existing output when it validates (resume), else None (the reason is logged)."""
    if case.problem or settings.overwrite:
        return None
    path = output_path(output_dir, case.case_id)
    if not path.exists() and not path.is_symlink():
        return None
    problem = output_problem(path, case.paths, legal_labels(settings.labels))
    if problem:
        log.info("%s: segmenting again, the existing %s cannot be kept: %s", case.case_id, path.name, problem)
        return None
    return path


def process_case(case: Case, models: Sequence[LoadedModel], settings: Settings, output_dir: Path) -> CaseResult:
    """Keep a valid earlier output (SKIPPED), or segment the case (OK/FAILED)."""
    kept = kept_output(case, output_dir, settings)
    if kept:
        return CaseResult(case.case_id, Status.SKIPPED, output=kept, note="valid output of an earlier run kept")
    return run_case(case, models, settings, output_dir)


def discover_cases(input_dir: Path) -> list[Case]:
    """The cases under ``input_dir``.

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
    return cases


def prepare_output(output_dir: Path) -> None:
    """Create ``output_dir`` if needed, check that it takes files, and remove what a killed run left there.

    Raises:
        OutputError: the folder cannot be created or written.
    """
    if output_dir.exists() and not output_dir.is_dir():
        raise OutputError(f"output folder {output_dir} is not a folder; choose another -o folder.")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir, prefix=PARTIAL_PREFIX):
            pass
    except OSError as error:
        raise OutputError(f"output folder {output_dir} cannot be written ({error_reason(error)}); make it writable "
                          "or choose another -o folder.") from error
    for path in remove_partial_files(output_dir):
        log.info("removed %s, a temporary file left by an interrupted run", path.name)


def log_result(result: CaseResult) -> None:
    """One log line per case: info for OK/SKIPPED, the error sentence otherwise."""
    if result.status is Status.OK:
        extra = f"; {result.note}" if result.note else ""
        log.info("%s -> %s (%.1f s%s)", result.case_id, result.output, result.seconds, extra)
    elif result.status is Status.SKIPPED:
        log.info("%s: kept %s, a valid output of an earlier run", result.case_id, result.output)
    else:
        log.error("%s", result.error)


def run_batch(input_dir: Path, output_dir: Path, models: Sequence[LoadedModel], settings: Settings, *,
              report_path: Path | None = None, write_report: bool = True) -> tuple[list[CaseResult], Report]:
    """segment_folder, also returning the report (whose ``error`` says whether its last write failed).

    Args:
        report_path: where the report goes (default ``output_dir/htcnns-report.json``).
        write_report: False keeps the report in memory only.
    """
    cases = discover_cases(input_dir)
    prepare_output(output_dir)
    device = next(models[0].network.parameters()).device
    run = {"input": str(input_dir.resolve()), "output": str(output_dir.resolve()), "device": describe_device(device),
           "settings": asdict(settings), "models": model_entries(models)}
    path = (report_path or output_dir / REPORT_NAME) if write_report else None
    report = Report(path, run, [case.case_id for case in cases])
    results: list[CaseResult] = []
    try:
        for case in tqdm(cases, desc="cases", unit="case", disable=None):
            report.start(case.case_id)
            result = process_case(case, models, settings, output_dir)
            log_result(result)
            report.record(result)
            results.append(result)
    except KeyboardInterrupt:
        report.close("interrupted")
        raise
    report.close("finished")
    return results, report


def segment_folder(input_dir: Path, output_dir: Path, models: Sequence[LoadedModel], settings: Settings, *,
                   report_path: Path | None = None, write_report: bool = True) -> list[CaseResult]:
    """Segment every case found under ``input_dir`` into ``output_dir/<case-id>.nii.gz``.

    Raises:
        InputError: ``input_dir`` is not a folder or holds no BraTS-named case.
        OutputError: ``output_dir`` cannot be created or written.
    """
    return run_batch(input_dir, output_dir, models, settings, report_path=report_path,
                     write_report=write_report)[0]
