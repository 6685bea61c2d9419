"""End to end through segment_folder with tiny random models; bundled-model runs on the phantom and real case."""

import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import LPS_AFFINE, brain_volumes, write_case, write_real_crop
from htcnns.errors import InputError
from htcnns.inference import pipeline
from htcnns.inference.fuse import FusionMethod
from htcnns.inference.pipeline import (
    LOW_MEMORY_NOTE,
    LabelConvention,
    Settings,
    Status,
    default_models_root,
    load_models,
    segment_case,
    segment_folder,
)
from htcnns.inference.report import REPORT_NAME
from htcnns.labels import regions_from_labels
from htcnns.weights import sha256_of


def assert_valid_output(path: Path, reference: Path, allowed: set[int]) -> np.ndarray:
    written, source = nib.load(path), nib.load(reference)
    labels = np.asarray(written.dataobj)
    assert written.get_data_dtype() == np.uint8
    assert labels.shape == source.shape[:3]
    assert np.allclose(written.affine, source.affine)
    assert set(np.unique(labels)) <= allowed
    regions = regions_from_labels(np.where(labels == 4, 3, labels))
    assert not (regions[1] & ~regions[0]).any() and not (regions[2] & ~regions[1]).any()
    return labels


@pytest.mark.parametrize("fusion", list(FusionMethod))
def test_folder_with_good_and_broken_cases(tmp_path: Path, tiny_models: Path, fusion: FusionMethod):
    inputs = tmp_path / "in"
    write_case(inputs / "GOOD-00001-000", "GOOD-00001-000", brain_volumes((24, 28, 20)))
    broken = write_case(inputs / "BAD-00002-000", "BAD-00002-000", brain_volumes((24, 28, 20)))
    nib.save(nib.Nifti1Image(np.ones((10, 10, 10), np.float32), LPS_AFFINE), broken / "BAD-00002-000-t2w.nii.gz")
    results = segment_folder(inputs, tmp_path / "out", load_models(tiny_models, "cpu"), Settings(fusion=fusion))
    by_id = {r.case_id: r for r in results}
    assert by_id["GOOD-00001-000"].ok and not by_id["BAD-00002-000"].ok
    assert "BAD-00002-000-t2w.nii.gz is (10, 10, 10) voxels" in by_id["BAD-00002-000"].error
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["GOOD-00001-000.nii.gz", REPORT_NAME]
    assert_valid_output(tmp_path / "out" / "GOOD-00001-000.nii.gz",
                        inputs / "GOOD-00001-000" / "GOOD-00001-000-t1c.nii.gz", {0, 1, 2, 3})


@pytest.fixture(scope="module")
def models(tiny_models: Path):
    return load_models(tiny_models, "cpu")


def three_cases(inputs: Path) -> list[str]:
    ids = ["CASE-A", "CASE-B", "CASE-C"]
    for number, case_id in enumerate(ids):
        write_case(inputs / case_id, case_id, brain_volumes((24, 28, 20), seed=number))
    return ids


def instant_labels(case, models, settings, **_):
    """Stands in for segment_case where the batch logic, not inference, is under test: an ET blob in ED."""
    if case.problem:
        raise InputError(f"{case.case_id}: {case.problem}")
    reference = nib.load(case.paths["t1c"])
    labels = np.zeros(reference.shape, np.uint8)
    labels[8:14, 8:14, 6:12], labels[10:12, 10:12, 8:10] = 2, 3
    return pipeline.Segmentation(labels, reference)


@pytest.fixture
def instant(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "segment_case", instant_labels)


def read_report(output: Path) -> dict:
    return json.loads((output / REPORT_NAME).read_text())


def test_report_lists_cases_versions_and_weights(tmp_path: Path, tiny_models: Path, models, instant):
    three_cases(tmp_path / "in")
    (tmp_path / "in" / "CASE-B" / "CASE-B-t1n.nii.gz").unlink()
    segment_folder(tmp_path / "in", tmp_path / "out", models, Settings())
    report = read_report(tmp_path / "out")
    assert report["format"] == "htcnns-report/1" and report["state"] == "finished"
    assert set(report["versions"]) >= {"htcnns", "torch", "monai", "python"} and report["device"] == "cpu"
    assert {m["name"]: m["sha256"] for m in report["models"]} == {
        folder.name: sha256_of(folder / "weights.safetensors") for folder in tiny_models.iterdir()}
    assert report["summary"] == {"ok": 2, "skipped": 0, "failed": 1, "pending": 0, "interrupted": 0}
    by_id = {case["case_id"]: case for case in report["cases"]}
    assert by_id["CASE-A"]["output"] == "CASE-A.nii.gz" and by_id["CASE-A"]["seconds"] > 0
    assert by_id["CASE-B"] == {"case_id": "CASE-B", "status": "failed", "output": None, "note": "",
                               "error": "CASE-B: missing modality t1n (need t1n, t1c, t2w, t2f)",
                               "seconds": by_id["CASE-B"]["seconds"], "device": "cpu", "stages": {}}


def test_rerun_keeps_valid_outputs_and_redoes_broken_ones(tmp_path: Path, models, instant):
    three_cases(tmp_path / "in")
    out = tmp_path / "out"
    segment_folder(tmp_path / "in", out, models, Settings())
    first = {p.name: p.read_bytes() for p in out.glob("*.nii.gz")}
    (out / "CASE-B.nii.gz").write_bytes(first["CASE-B.nii.gz"][:100])  # truncated by some other tool
    (out / "CASE-C.nii.gz").unlink()
    (out / ".htcnns-leftover.part.nii.gz").write_bytes(b"from a killed run")
    results = segment_folder(tmp_path / "in", out, models, Settings())
    assert [r.status for r in results] == [Status.SKIPPED, Status.OK, Status.OK] and all(r.ok for r in results)
    assert {p.name: p.read_bytes() for p in out.glob("*.nii.gz")} == first
    assert sorted(p.name for p in out.iterdir()) == ["CASE-A.nii.gz", "CASE-B.nii.gz", "CASE-C.nii.gz", REPORT_NAME]
    assert read_report(out)["summary"]["skipped"] == 1
    overwritten = segment_folder(tmp_path / "in", out, models, Settings(overwrite=True))
    assert [r.status for r in overwritten] == [Status.OK] * 3


def test_rerun_removes_a_partial_qc_picture_of_a_killed_run(tmp_path: Path, models, instant):
    three_cases(tmp_path / "in")
    qc = tmp_path / "out" / "qc"
    qc.mkdir(parents=True)
    (qc / ".htcnns-abc.part").write_bytes(b"half a PNG")
    segment_folder(tmp_path / "in", tmp_path / "out", models, Settings(qc_dir=qc))
    assert not [p.name for p in qc.iterdir() if p.name.startswith(".")]
    assert (qc / "index.html").is_file()


def test_other_label_convention_is_not_kept(tmp_path: Path, models, instant):
    three_cases(tmp_path / "in")
    segment_folder(tmp_path / "in", tmp_path / "out", models, Settings())
    results = segment_folder(tmp_path / "in", tmp_path / "out", models, Settings(labels=LabelConvention.BRATS2021))
    assert [r.status for r in results] == [Status.OK] * 3
    assert 4 in np.asarray(nib.load(tmp_path / "out" / "CASE-A.nii.gz").dataobj)


def fake_segment(behaviour: dict[str, object]):
    """segment_case that raises the listed exception on a case's first call; records the settings it saw."""
    seen = []

    def segment(case, models, settings, **_):
        seen.append((case.case_id, settings))
        action = behaviour.get(case.case_id)
        if isinstance(action, BaseException) and sum(c == case.case_id for c, _ in seen) == 1:
            raise action
        return instant_labels(case, models, settings)

    return segment, seen


def test_case_timeout_fails_that_case_only(tmp_path: Path, models, monkeypatch: pytest.MonkeyPatch):
    three_cases(tmp_path / "in")

    def instant_or_stuck(case, models, settings, **_):  # no inference: the timing must not depend on machine load
        if case.case_id == "CASE-B":
            time.sleep(60)
        return instant_labels(case, models, settings)

    monkeypatch.setattr(pipeline, "segment_case", instant_or_stuck)
    start = time.perf_counter()
    results = segment_folder(tmp_path / "in", tmp_path / "out", models, Settings(case_timeout=1.5))
    assert time.perf_counter() - start < 20
    assert [r.status for r in results] == [Status.OK, Status.FAILED, Status.OK]
    assert results[1].error.startswith("CASE-B: stopped after 1.5 s, the limit set by --case-timeout")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["CASE-A.nii.gz", "CASE-C.nii.gz", REPORT_NAME]


def test_cuda_out_of_memory_retries_with_low_memory_settings(tmp_path: Path, models, monkeypatch: pytest.MonkeyPatch):
    """No GPU here: the seam raises torch's real OutOfMemoryError once, as CUDA would on a large image."""
    three_cases(tmp_path / "in")
    segment, seen = fake_segment({"CASE-A": torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate")})
    monkeypatch.setattr(pipeline, "segment_case", segment)
    results = segment_folder(tmp_path / "in", tmp_path / "out", models, Settings(sw_batch_size=8))
    assert all(r.status is Status.OK for r in results) and results[0].note == LOW_MEMORY_NOTE
    assert [(case_id, s.sw_batch_size, s.low_memory) for case_id, s in seen] == [
        ("CASE-A", 8, False), ("CASE-A", 1, True), ("CASE-B", 8, False), ("CASE-C", 8, False)]
    assert read_report(tmp_path / "out")["cases"][0]["note"] == LOW_MEMORY_NOTE


def test_out_of_memory_twice_fails_the_case_with_advice(tmp_path: Path, models, monkeypatch: pytest.MonkeyPatch):
    three_cases(tmp_path / "in")

    def always_oom(case, models, settings, **_):
        if case.case_id == "CASE-A":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return instant_labels(case, models, settings)

    monkeypatch.setattr(pipeline, "segment_case", always_oom)
    results = segment_folder(tmp_path / "in", tmp_path / "out", models, Settings())
    assert [r.status for r in results] == [Status.FAILED, Status.OK, Status.OK]
    assert results[0].error == ("CASE-A: the GPU ran out of memory, even with --sw-batch-size 1 and blending on the "
                                "CPU; free the GPU or run with --device cpu.")


def test_low_memory_settings_give_the_same_labels(tmp_path: Path, models):
    [case] = pipeline.find_cases(write_case(tmp_path / "C", "C", brain_volumes((24, 28, 20))))
    normal = segment_case(case, models, Settings())
    low = segment_case(case, models, Settings(low_memory=True))
    assert np.array_equal(normal.labels, low.labels) and normal.review == low.review


def test_interrupt_mid_case_leaves_no_file_and_says_so(tmp_path: Path, models, monkeypatch: pytest.MonkeyPatch):
    three_cases(tmp_path / "in")
    segment, _ = fake_segment({"CASE-B": KeyboardInterrupt()})
    monkeypatch.setattr(pipeline, "segment_case", segment)
    with pytest.raises(KeyboardInterrupt):
        segment_folder(tmp_path / "in", tmp_path / "out", models, Settings())
    report = read_report(tmp_path / "out")
    assert report["state"] == "interrupted"
    assert [(c["case_id"], c["status"]) for c in report["cases"]] == [
        ("CASE-A", "ok"), ("CASE-B", "interrupted"), ("CASE-C", "pending")]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["CASE-A.nii.gz", REPORT_NAME]


def test_report_can_go_elsewhere_or_nowhere(tmp_path: Path, models, instant):
    three_cases(tmp_path / "in")
    segment_folder(tmp_path / "in", tmp_path / "a", models, Settings(), report_path=tmp_path / "r.json")
    segment_folder(tmp_path / "in", tmp_path / "b", models, Settings(), write_report=False)
    assert json.loads((tmp_path / "r.json").read_text())["summary"]["ok"] == 3
    assert not (tmp_path / "a" / REPORT_NAME).exists() and not (tmp_path / "b" / REPORT_NAME).exists()


def bundled_models():
    root = default_models_root()
    if not any(root.glob("*/manifest.json")):
        pytest.skip(f"no bundled models in {root}")
    return load_models(root, "cpu")


@pytest.mark.slow
def test_real_case_in_2023_and_2021_names(tmp_path: Path):
    real = write_real_crop(tmp_path / "in2023" / "BraTS-GLI-00001-000")
    renamed = write_real_crop(tmp_path / "in2021" / "BraTS2021_00001", {
        source: f"BraTS2021_00001_{target}.nii.gz"
        for source, target in [("t1n", "t1"), ("t1c", "t1ce"), ("t2w", "t2"), ("t2f", "flair")]})
    models = bundled_models()
    [r2023] = segment_folder(real, tmp_path / "out2023", models, Settings())
    [r2021] = segment_folder(renamed.parent, tmp_path / "out2021", models,
                             Settings(labels=LabelConvention.BRATS2021))
    assert r2023.ok and r2021.ok, (r2023.error, r2021.error)
    reference = real / "BraTS-GLI-00001-000-t1c.nii.gz"
    a = assert_valid_output(r2023.output, reference, {0, 1, 2, 3})
    b = assert_valid_output(r2021.output, reference, {0, 1, 2, 4})
    assert np.array_equal(np.where(b == 4, 3, b), a)


def test_a_stop_during_the_write_waits_for_the_report_entry():
    """SIGTERM while an output is renamed into place is held back until the report records the case."""
    import signal

    from htcnns.errors import Interrupted
    from htcnns.inference.interrupts import STOP_SIGNALS, hold_stops, release_stops, stop_on_signals

    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    try:
        stop_on_signals()
        hold_stops()
        signal.raise_signal(signal.SIGTERM)  # handled at once, in this thread: held, not raised
        with pytest.raises(Interrupted):
            release_stops()
        release_stops()  # unbalanced releases are harmless
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
