"""The Python API: ``Segmenter`` loads and verifies the networks once, then segments cases or whole folders.

    from htcnns import Segmenter

    segmenter = Segmenter()                                # bundled models, GPU when present, torch backend
    result = segmenter.segment("BraTS-GLI-00001-000/")     # a case folder, four paths, or four arrays + affine
    result.volumes_ml["WT"], result.review.needs_review
    result.save("BraTS-GLI-00001-000.nii.gz")

The CLI's ``segment`` is ``Segmenter.segment_folder``; both run the same stages (``htcnns.inference.pipeline``).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from htcnns.errors import InputError
from htcnns.inference.cases import Case, display_id, find_cases
from htcnns.inference.fuse import FusionMethod
from htcnns.inference.io import Volume, atomic_write, error_reason, write_label_map
from htcnns.inference.pipeline import (
    CaseInput,
    Settings,
    input_warnings,
    load_case,
    load_models,
    prepare_volumes,
    run_batch,
    segment_case,
)
from htcnns.inference.pipeline import default_models_root as bundled_models
from htcnns.inference.prepare import native_labels, prepare_native_cases, save_native_qc_picture
from htcnns.inference.qc import region_volumes_ml
from htcnns.inference.report import REPORT_NAME, CaseResult, Report
from htcnns.inference.review import Review
from htcnns.inference.shards import Shard
from htcnns.inference.timing import StageClock
from htcnns.labels import MODALITIES, LabelConvention, convert_labels

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegmentationResult:
    """One segmented case: BraTS 2023 labels (1 NCR, 2 ED, 3 ET) on the input grid, that grid's affine and image,
    volumes in ml (NCR, ED, ET, TC, WT), the networks' agreement and the seconds of each stage."""

    labels: np.ndarray
    affine: np.ndarray
    reference: nib.Nifti1Image
    volumes_ml: dict[str, float]
    review: Review | None
    seconds: dict[str, float]

    def save(self, path: str | Path, labels: LabelConvention = LabelConvention.BRATS2023) -> Path:
        """Write the label map as NIfTI with the input's geometry (atomically); returns the path."""
        target = Path(path)
        write_label_map(convert_labels(self.labels, labels), self.reference, target)
        return target


class Segmenter:
    """The three verified networks, loaded once, and the settings they run with."""

    def __init__(self, models: str | Path | None = None, device: str = "auto", backend: str = "torch",
                 fusion: str = "staple", oedema_opening: int = 0, mirror: bool = False) -> None:
        """Load every model folder under ``models`` (default: the bundled ones) onto ``device`` for ``backend``
        (``torch`` or ``onnxruntime``); ``fusion`` is ``staple`` or ``majority``; ``oedema_opening`` as
        ``segment --oedema-opening`` (0: off), ``mirror`` as ``segment --mirror``."""
        self.settings = Settings(device=device, fusion=FusionMethod(fusion), oedema_opening=oedema_opening,
                                 mirror=mirror)
        self.models = load_models(Path(models) if models else bundled_models(), device, backend)

    def segment(self, case: str | Path | None = None, *, t1n: object = None, t1c: object = None,
                t2w: object = None, t2f: object = None, affine: np.ndarray | None = None,
                case_id: str = "case") -> SegmentationResult:
        """Segment one case, given as a folder holding one case, as four file paths, or as four (X, Y, Z) arrays
        with the 4x4 voxel-to-world ``affine`` they share.

        Raises:
            InputError: the input is missing, ambiguous (a folder of several cases) or fails validation.
        """
        clock = StageClock()
        ready = self._input(case, {"t1n": t1n, "t1c": t1c, "t2w": t2w, "t2f": t2f}, affine, case_id, clock)
        input_warnings(ready, self.settings)
        segmentation = segment_case(Case(case_id), self.models, self.settings, ready=ready, clock=clock)
        volumes = region_volumes_ml(segmentation.labels, segmentation.reference.affine)
        return SegmentationResult(segmentation.labels, segmentation.reference.affine, segmentation.reference,
                                  volumes, segmentation.review, clock.seconds)

    def segment_folder(self, input_dir: str | Path, output_dir: str | Path, *, qc_dir: str | Path | None = None,
                       report_path: Path | None = None, write_report: bool = True, shard: Shard | None = None,
                       allow_empty: bool = False, **settings: object) -> tuple[list[CaseResult], Report]:
        """Every case under ``input_dir`` into ``output_dir/<case-id>.nii.gz`` (as ``htcnns segment``); extra
        keyword arguments override this segmenter's ``Settings`` (e.g. ``case_timeout=900``)."""
        chosen = Settings(**{**self.settings.__dict__, "qc_dir": Path(qc_dir) if qc_dir else None, **settings})
        return run_batch(Path(input_dir), Path(output_dir), self.models, chosen, report_path=report_path,
                         write_report=write_report, shard=shard, allow_empty=allow_empty)

    def segment_native_folder(self, input_dir: str | Path, output_dir: str | Path, *,
                              brats_space_dir: str | Path | None = None, overwrite: bool = False,
                              **options: object) -> tuple[list[CaseResult], Report, list[str]]:
        """Native scans (any grid, skull on; ``htcnns.inference.prepare``) into ``output_dir/<case-id>.nii.gz`` on
        each case's native T1c grid: every case is brought to BraTS space, segmented there as by
        ``segment_folder`` (report and QC in ``output_dir``; ``options`` as there) and its label map moved back.
        ``brats_space_dir`` keeps the BraTS-space images, brain masks, transforms and label maps (default: a
        temporary folder). Returns the results (cases that could not be prepared FAILED, those whose label map
        was already there SKIPPED; the report lists them too), the report and one line per case that could not be
        prepared."""
        output = Path(output_dir)
        with tempfile.TemporaryDirectory(prefix="htcnns-brats-space-") as scratch:
            root = Path(brats_space_dir) if brats_space_dir else Path(scratch)
            cases, labels = root / "cases", root / "labels"
            cases.mkdir(parents=True, exist_ok=True)
            preparation = prepare_native_cases(Path(input_dir), cases, output, overwrite)
            results, report = self.segment_folder(cases, labels, report_path=options.pop("report_path", None)
                                                  or output / REPORT_NAME, overwrite=True, allow_empty=True,
                                                  **options)
            for i, result in enumerate(results):
                if result.ok and result.output is not None:
                    labels_native = native_labels(result.output, cases / result.case_id)
                    atomic_write(output / result.output.name,
                                 lambda path, image=labels_native: sitk.WriteImage(image, str(path)), ".part.nii.gz")
                    results[i] = preparation.noted(result)
                    if options.get("qc_dir"):
                        results[i] = _with_native_qc(results[i], cases / result.case_id, labels_native,
                                                     Path(str(options["qc_dir"])))
                    if results[i] is not result:
                        report.record(results[i])
        segmented = {result.case_id for result in results}
        for result in preparation.results(output):
            if result.case_id not in segmented:
                report.record(result)
                results.append(result)
        return results, report, list(preparation.problems.values())

    @staticmethod
    def _input(case: str | Path | None, images: Mapping[str, object], affine: np.ndarray | None, case_id: str,
               clock: StageClock) -> CaseInput:
        """The loaded case for any of ``segment``'s input forms."""
        given = {m: v for m, v in images.items() if v is not None}
        if case is not None and given:
            raise InputError("give a case folder or the four images, not both")
        if case is not None:
            found = find_cases(Path(case))
            if len(found) != 1:
                raise InputError(f"{case}: expected one case, found {len(found)}; use segment_folder for several")
            return load_case(found[0])
        if sorted(given) != sorted(MODALITIES):
            raise InputError(f"give all four images ({', '.join(MODALITIES)}); missing "
                             f"{', '.join(m for m in MODALITIES if m not in given) or 'none'}")
        if all(isinstance(v, str | Path) for v in given.values()):
            return load_case(Case(case_id, {m: Path(str(v)) for m, v in given.items()}))
        if affine is None:
            raise InputError("arrays need the affine (4x4 voxel-to-world) they share")
        return _from_arrays(given, np.asarray(affine, dtype=np.float64), case_id, clock)


def _with_native_qc(result: CaseResult, prepared_case: Path, labels: sitk.Image, qc_dir: Path) -> CaseResult:
    """``result`` with ``qc_native_picture`` (``<id>-native.png`` in ``qc_dir``) once that picture is written; a
    failure is logged and the label map stands."""
    path = qc_dir / f"{result.case_id}-native.png"
    try:
        save_native_qc_picture(result.case_id, prepared_case, labels, path)
    except Exception as error:  # the label map is the product, as in pipeline.case_qc
        log.warning("%s: no QC picture on the native grid (%s: %s)", display_id(result.case_id),
                    type(error).__name__, error_reason(error))
        return result
    return replace(result, extra=result.extra | {"qc_native_picture": path.name})


def _from_arrays(arrays: Mapping[str, object], affine: np.ndarray, case_id: str, clock: StageClock) -> CaseInput:
    """A loaded case from four in-memory arrays (validated like files)."""
    volumes = {}
    for modality, array in arrays.items():
        data = np.asarray(array, dtype=np.float32)
        volumes[modality] = Volume(Path(f"<{modality} array>"), data, nib.Nifti1Image(data, affine))
    return prepare_volumes(case_id, volumes, clock)
