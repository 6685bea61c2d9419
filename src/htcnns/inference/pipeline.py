"""segment_case(): the stages in order; segment_folder(): every case of a folder, one failure never stops the rest.

Stages: ``load_case`` (read, validate, preprocess) -> each network (sliding window) -> post-processing -> fusion
-> write, each timed (``timing``) into the case's entry of the report. In a batch the next case is loaded
in a background thread while the networks run on the current one (``Prefetch``: one case ahead, so memory stays
bounded); its failures still fail that case alone, when its turn comes.

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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from tqdm import tqdm

from htcnns.errors import CaseTimeout, HtcnnsError, InputError, OutputError, WeightsError
from htcnns.inference.batch_page import write_csv, write_index
from htcnns.inference.cases import Case, case_id_problem, display_id, find_cases
from htcnns.inference.fuse import FusionMethod, fuse_label_maps
from htcnns.inference.interrupts import deadline, hold_stops, release_stops
from htcnns.inference.io import PARTIAL_PREFIX, Volume, error_reason, read_volume, remove_partial_files, write_label_map
from htcnns.inference.postprocess import postprocess, remove_thin_oedema
from htcnns.inference.predict import fast_inference_settings, predict, resolve_device, to_network_input
from htcnns.inference.preprocess import (
    NORMALIZATION,
    STATISTICS_EROSION_VOXELS,
    Prepared,
    preprocess,
    restore_input_grid,
)
from htcnns.inference.qc import write_case_qc
from htcnns.inference.report import REPORT_NAME, CaseResult, Report, Status, describe_device, model_entries
from htcnns.inference.review import Review, review_case
from htcnns.inference.shards import Shard, select_shard
from htcnns.inference.timing import StageClock
from htcnns.inference.validate import PREPARE_ADVICE, output_problem, validate_case
from htcnns.labels import MODALITIES, LabelConvention, convert_labels, legal_labels
from htcnns.weights import LoadedModel, find_model_folders, load_model

__all__ = ["CaseResult", "LabelConvention", "Settings", "Status", "segment_case", "segment_folder"]

log = logging.getLogger(__name__)

LOW_MEMORY_NOTE = "retried after CUDA ran out of memory, with --sw-batch-size 1 and blending on the CPU"


@dataclass(frozen=True)
class Settings:
    """What a user can change about a run (the CLI fills it).

    case_timeout: seconds of wall clock one case may take (None: no limit).
    qc_dir: where each case's QC picture and the batch's index.html and cases.csv go (None: no QC).
    strict_input: refuse a case that does not look BraTS-preprocessed (else it is segmented with a warning).
    prefetch: load the next case in the background while the networks run on this one.
    overwrite: segment every case again instead of keeping valid outputs of an earlier run.
    low_memory: blend windows and fuse on the CPU (used by the retry after a CUDA out-of-memory).
    oedema_opening: with R > 0, oedema thinner than a ball of R voxels is removed from the fused map
        (``postprocess.remove_thin_oedema``; not the paper's, off by default, docs/real-cases.md).
    mirror: test-time mirroring, each network's probabilities averaged over the image and its 7 mirror images
        (``predict.MIRROR_AXES``; 8x the network time; off by default, docs/native-scans.md).
    """

    device: str = "auto"
    fusion: FusionMethod = FusionMethod.STAPLE
    labels: LabelConvention = LabelConvention.BRATS2023
    sw_batch_size: int | None = None
    case_timeout: float | None = None
    overwrite: bool = False
    low_memory: bool = False
    qc_dir: Path | None = None
    strict_input: bool = False
    prefetch: bool = True
    oedema_opening: int = 0
    mirror: bool = False


def default_models_root() -> Path:
    """``$HTCNNS_MODELS`` if set, else the ``models/`` folder of this checkout."""
    return Path(os.environ.get("HTCNNS_MODELS", Path(__file__).resolve().parents[3] / "models"))


def load_models(models_root: Path, device: str = "auto", backend: str = "torch") -> list[LoadedModel]:
    """Verify and load every model folder under ``models_root`` onto the resolved device, for ``backend``."""
    fast_inference_settings()
    target = resolve_device(device)
    models = [load_model(folder, target, backend) for folder in find_model_folders(models_root)]
    for model in models:
        check_normalization(model)
    return models


def check_normalization(model: LoadedModel) -> None:
    """Refuse a model trained on inputs normalised otherwise than ``preprocess`` does: it would segment them
    silently worse."""
    if model.manifest.normalization != NORMALIZATION:
        raise WeightsError(
            f"{model.folder}: trained on inputs normalised as {model.manifest.normalization!r}, but this version "
            f"feeds {NORMALIZATION!r} (z-score statistics over the brain eroded by {STATISTICS_EROSION_VOXELS} "
            "voxels); fine-tune it with `htcnns train --init-from` or use the bundled models"
        )


@dataclass(frozen=True)
class CaseInput:
    """A case read, validated and preprocessed: the networks' input, the grid its labels go back to, the T1c and
    FLAIR on that grid (for the QC picture), and the seconds each of those stages took."""

    prepared: Prepared
    reference: nib.Nifti1Image
    seconds: dict[str, float]
    t1c: np.ndarray | None = None
    flair: np.ndarray | None = None
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Segmentation:
    """One case segmented: BraTS 2023 labels (X, Y, Z) on the input grid, that grid's image, and the networks'
    agreement (None when a single network ran)."""

    labels: np.ndarray
    reference: nib.Nifti1Image
    review: Review | None = None


def load_case(case: Case) -> CaseInput:
    """Read, validate and preprocess one case.

    Raises:
        InputError: the case's files are missing, unreadable or inconsistent.
    """
    if case.problem:
        raise InputError(f"{display_id(case.case_id)}: {case.problem}")
    clock = StageClock()
    with clock.stage("read"):
        volumes = {modality: read_volume(path, case.case_id) for modality, path in case.paths.items()}
    return prepare_volumes(case.case_id, volumes, clock)


def prepare_volumes(case_id: str, volumes: Mapping[str, Volume], clock: StageClock | None = None) -> CaseInput:
    """Validate and preprocess the four volumes of a case (read from files, or made from arrays by the API).

    Raises:
        InputError: the volumes are inconsistent (``validate_case``).
    """
    clock = clock or StageClock()
    with clock.stage("validate"):
        loaded = validate_case(case_id, volumes)
    with clock.stage("preprocess"):
        prepared = preprocess(loaded)
    t1c, flair = (loaded.image[MODALITIES.index(m)] for m in ("t1c", "t2f"))
    return CaseInput(prepared, loaded.reference, dict(clock.seconds), t1c, flair, loaded.warnings)


def model_labels(image: torch.Tensor, prepared: Prepared, model: LoadedModel, sw_batch_size: int | None = None,
                 stitch_device: str | None = None) -> np.ndarray:
    """One model's post-processed label map, uint8 (x, y, z) on the prepared grid.

    Args:
        image: the prepared image as a (1, 4, x, y, z) tensor on the model's device (made once per case).
        stitch_device: where windows are blended (None: the image's device).
    """
    probs = predict(image, model, sw_batch_size=sw_batch_size, stitch_device=stitch_device).probs
    return postprocess(probs, model.manifest.postprocessing, brain=prepared.brain)


def segment_case(case: Case, models: Sequence[LoadedModel], settings: Settings, *, ready: CaseInput | None = None,
                 clock: StageClock | None = None) -> Segmentation:
    """Segment one complete case.

    Args:
        ready: the case already loaded (``load_case``, e.g. by the batch's prefetch); None loads it here.
        clock: receives the seconds of every stage (the loading stages too).

    Returns:
        uint8 (X, Y, Z) BraTS 2023 label map on the input's voxel grid, the image whose geometry it shares, and
        the networks' agreement.

    Raises:
        InputError: the case's files are missing, unreadable or inconsistent.
    """
    ready = ready or load_case(case)
    clock = clock or StageClock()
    for stage, seconds in ready.seconds.items():
        clock.seconds.setdefault(stage, seconds)
    prepared = ready.prepared
    image = to_network_input(prepared.image, models[0].device)
    stitch = "cpu" if settings.low_memory else None
    per_model = []
    for model in models:
        with clock.stage(model.manifest.name):
            probs = predict(image, model, sw_batch_size=settings.sw_batch_size, stitch_device=stitch,
                            mirror=settings.mirror).probs
        with clock.stage("postprocess"):
            per_model.append(postprocess(probs, model.manifest.postprocessing, brain=prepared.brain))
    with clock.stage("fuse"):
        fused = fuse_label_maps(per_model, settings.fusion, device=stitch or str(models[0].device))
        labels = restore_input_grid(remove_thin_oedema(fused, settings.oedema_opening), prepared)
    with clock.stage("review"):
        review = review_case(per_model) if len(per_model) > 1 else None
    return Segmentation(labels, ready.reference, review)


def segment_with_retry(case: Case, models: Sequence[LoadedModel], settings: Settings, *,
                       ready: CaseInput | None = None,
                       clock: StageClock | None = None) -> tuple[Segmentation, str]:
    """segment_case, retried once with low-memory settings when CUDA runs out of memory.

    Returns:
        The segmentation and a note ("" or LOW_MEMORY_NOTE when the retry was needed).
    """
    try:
        return segment_case(case, models, settings, ready=ready, clock=clock), ""
    except torch.cuda.OutOfMemoryError:  # leaving the except block frees the failed attempt's tensors
        if settings.low_memory:
            raise
        log.warning("%s: CUDA out of memory; retrying with --sw-batch-size 1 and blending on the CPU", case.case_id)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    low = replace(settings, sw_batch_size=1, low_memory=True)
    return segment_case(case, models, low, ready=ready, clock=clock), LOW_MEMORY_NOTE


def output_path(output_dir: Path, case_id: str) -> Path:
    """``output_dir/<case-id>.nii.gz``; an id that would not name a plain file there is an OutputError."""
    problem = case_id_problem(case_id)
    if problem:
        raise OutputError(f"{display_id(case_id)}: {problem}")
    return output_dir / f"{case_id}.nii.gz"


def run_case(case: Case, models: Sequence[LoadedModel], settings: Settings, output_dir: Path,
             loading: Future[CaseInput] | None = None) -> CaseResult:
    """Segment and write one case, turning any failure (timeout and out-of-memory included) into one sentence.

    Args:
        loading: the case being loaded in the background (its wait counts toward ``case_timeout``); None loads it.
    """
    start, clock = time.perf_counter(), StageClock()
    device = describe_device(models[0].device)
    try:
        with deadline(settings.case_timeout):
            ready = loading.result() if loading else load_case(case)
            note_input = input_warnings(ready, settings)
            segmentation, note = segment_with_retry(case, models, settings, ready=ready, clock=clock)
            extra = segmentation.review.to_json() if segmentation.review else {}
            if settings.qc_dir is not None:  # before the write: a run stopped meanwhile leaves neither
                with clock.stage("qc"):
                    extra |= case_qc(case.case_id, ready, segmentation, settings.qc_dir)
            hold_stops()  # released by run_batch once the report holds this case (htcnns.inference.interrupts)
            with clock.stage("write"):
                output = output_path(output_dir, case.case_id)
                write_label_map(convert_labels(segmentation.labels, settings.labels), segmentation.reference, output)
    except (Exception, CaseTimeout) as error:
        log.debug("traceback of %s", display_id(case.case_id), exc_info=True)
        sentence = failure_sentence(case.case_id, error, settings)
        return CaseResult(case.case_id, Status.FAILED, sentence, time.perf_counter() - start, stages=clock.seconds,
                          device=device)
    note = "; ".join(filter(None, [note, *(w.split(": ", 1)[1] for w in note_input)]))
    return CaseResult(case.case_id, Status.OK, "", time.perf_counter() - start, output, note, clock.seconds, device,
                      extra)


def input_warnings(ready: CaseInput, settings: Settings) -> tuple[str, ...]:
    """Log the case's not-BraTS-space warnings and return them; with ``strict_input`` they refuse the case."""
    if ready.warnings and settings.strict_input:
        raise InputError(f"{'; '.join(ready.warnings)}; refused (--strict-input): {PREPARE_ADVICE}.")
    for warning in ready.warnings:
        log.warning("%s; %s (--strict-input refuses such cases).", warning, PREPARE_ADVICE)
    return ready.warnings


def case_qc(case_id: str, ready: CaseInput, segmentation: Segmentation, qc_dir: Path) -> dict[str, object]:
    """The case's QC picture and volumes (``htcnns.inference.qc``) as report fields; a failure is logged,
    the case stays OK."""
    try:  # the atomic writes create qc_dir
        written = write_case_qc(case_id, ready.t1c, ready.flair, segmentation.labels, segmentation.reference.affine,
                                qc_dir)
    except Exception as error:  # the label map is the product; a picture that fails must not fail the case
        log.warning("%s: no QC picture (%s: %s)", display_id(case_id), type(error).__name__, error_reason(error))
        return {}
    return written.to_report()


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


class Prefetch:
    """Loads cases (``load_case``) one at a time in a background thread, ahead of the networks."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="htcnns-load")
        self.loading: dict[str, Future[CaseInput]] = {}

    def start(self, case: Case) -> None:
        """Begin loading ``case`` unless it is loading already."""
        if case.case_id not in self.loading:
            self.loading[case.case_id] = self.pool.submit(load_case, case)

    def take(self, case: Case) -> Future[CaseInput] | None:
        """The loading of ``case`` (None if it was never started); forgotten here, so its memory goes with it."""
        return self.loading.pop(case.case_id, None)

    def close(self) -> None:
        """Drop what has not started; a load in progress finishes in its thread, unused."""
        self.pool.shutdown(wait=False, cancel_futures=True)


def plan_cases(cases: Iterable[Case], output_dir: Path, settings: Settings,
               prefetch: Prefetch) -> Iterator[tuple[Case, Path | None]]:
    """Each case with its kept output (None: segment it), starting to load the next case to segment before the
    current one is handed out."""
    decided = ((case, kept_output(case, output_dir, settings)) for case in cases)
    upcoming = next(decided, None)
    while upcoming is not None:
        case, kept = upcoming  # a case not loaded ahead is loaded by run_case itself
        upcoming = next(decided, None)
        if upcoming is not None and upcoming[1] is None and settings.prefetch:
            prefetch.start(upcoming[0])
        yield case, kept


def process_case(case: Case, kept: Path | None, models: Sequence[LoadedModel], settings: Settings,
                 output_dir: Path, prefetch: Prefetch) -> CaseResult:
    """Keep a valid earlier output (SKIPPED), or segment the case (OK/FAILED)."""
    if kept:
        return CaseResult(case.case_id, Status.SKIPPED, output=kept, note="valid output of an earlier run kept")
    return run_case(case, models, settings, output_dir, prefetch.take(case))


def discover_cases(input_dir: Path, allow_empty: bool = False) -> list[Case]:
    """The cases under ``input_dir``.

    Raises:
        InputError: ``input_dir`` is not a folder or holds no BraTS-named case (unless ``allow_empty``).
    """
    if not input_dir.is_dir():
        raise InputError(f"input folder {input_dir} does not exist or is not a folder")
    cases = find_cases(input_dir)
    if not cases and not allow_empty:
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


def remove_leftovers(*folders: Path | None) -> None:
    """Delete (and log) the temporary files an interrupted or killed run left in the existing ``folders``."""
    for folder in folders:
        for path in remove_partial_files(folder) if folder is not None and folder.is_dir() else ():
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
              report_path: Path | None = None, write_report: bool = True,
              shard: Shard | None = None, allow_empty: bool = False) -> tuple[list[CaseResult], Report]:
    """segment_folder, also returning the report (whose ``error`` says whether its last write failed).

    Args:
        report_path: where the report goes (default ``output_dir/htcnns-report.json``).
        write_report: False keeps the report in memory only.
        shard: segment only this shard's share of the cases (``htcnns.inference.shards``; None: all).
        allow_empty: a folder without cases gives an empty report instead of an error.
    """
    found = discover_cases(input_dir, allow_empty)
    cases = select_shard(found, shard)
    if shard is not None:
        log.info("shard %s: %d of the %d cases under %s", shard, len(cases), len(found), input_dir)
    prepare_output(output_dir)
    remove_leftovers(output_dir, settings.qc_dir)  # label maps and QC pictures a killed run was writing
    run = {"input": str(input_dir.resolve()), "output": str(output_dir.resolve()),
           "device": describe_device(models[0].device), "backend": models[0].backend,
           "settings": asdict(settings) | {"qc_dir": str(settings.qc_dir) if settings.qc_dir else None},
           "models": model_entries(models), "shard": str(shard) if shard else None}
    path = (report_path or output_dir / REPORT_NAME) if write_report else None
    report = Report(path, run, [case.case_id for case in cases])
    results: list[CaseResult] = []
    prefetch = Prefetch()
    try:
        planned = plan_cases(cases, output_dir, settings, prefetch)
        bar_off = True if os.environ.get("TQDM_DISABLE") else None  # --quiet; None: a bar on a terminal only
        for case, kept in tqdm(planned, total=len(cases), desc="cases", unit="case", disable=bar_off):
            report.start(case.case_id)
            try:
                result = process_case(case, kept, models, settings, output_dir, prefetch)
                log_result(result)
                report.record(result)
                results.append(result)
            finally:
                release_stops()  # a stop held back during the write takes effect here
            if settings.qc_dir is not None:
                write_batch_page(report, settings.qc_dir)
        report.close("finished")
    except KeyboardInterrupt:
        report.close("interrupted")
        raise
    finally:
        prefetch.close()
        if settings.qc_dir is not None:
            write_batch_page(report, settings.qc_dir)  # the page's state as the report's (finished, interrupted)
        if report.run.get("state") == "interrupted":  # a stop at a write's start can leave its temp file
            remove_leftovers(output_dir, settings.qc_dir)
    return results, report


def write_batch_page(report: Report, qc_dir: Path) -> None:
    """Rewrite the QC folder's index.html and cases.csv from the report; a failure is logged, the run goes on."""
    try:  # the atomic writes create qc_dir
        snapshot = report.to_json()
        write_index(snapshot, qc_dir)
        write_csv(snapshot, qc_dir)
    except (OSError, OutputError) as error:
        log.warning("the QC page in %s could not be written (%s)", qc_dir, error_reason(error))


def segment_folder(input_dir: Path, output_dir: Path, models: Sequence[LoadedModel], settings: Settings, *,
                   report_path: Path | None = None, write_report: bool = True) -> list[CaseResult]:
    """Segment every case found under ``input_dir`` into ``output_dir/<case-id>.nii.gz``.

    Raises:
        InputError: ``input_dir`` is not a folder or holds no BraTS-named case.
        OutputError: ``output_dir`` cannot be created or written.
    """
    return run_batch(input_dir, output_dir, models, settings, report_path=report_path,
                     write_report=write_report)[0]
