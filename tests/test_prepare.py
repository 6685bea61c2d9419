"""Native scans -> BraTS space and back: modality names, mappings and DICOM series on real files; on a simulated
native case from a real BraTS case (skipped without ../shared/data) the registration error, the brain mask and
``htcnns segment --preprocess`` writing label maps on the native T1c grid."""

from __future__ import annotations

import json
import locale
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from conftest import save_tiny_models, small_image, write_dicom_series
from htcnns.errors import InputError
from htcnns.evaluation.native_heads import simulate_head, tilted
from htcnns.evaluation.native_sim import NativeSimulation, brats_space_images, registration_error_mm, simulate_native
from htcnns.inference.native_cases import (
    NativeCase,
    dicom_series,
    find_native_cases,
    modality_of,
    native_case,
    read_native,
)
from htcnns.inference.prepare import (
    NATIVE_T1C_NAME,
    PREPARATION_NAME,
    grid_centre,
    head_top,
    labels_to_native,
    load_atlas,
    native_labels,
    ras_affine,
    refine_brain_mask,
    to_brats_space,
)
from htcnns.inference.registration_check import RegistrationCheck, check_registration
from htcnns.labels import MODALITIES, dice

REAL_CASE = Path(__file__).resolve().parents[2] / "shared" / "data" / "brats-real-labelled" / "BraTS20_Training_001"
REAL_HEAD = REAL_CASE.parents[1] / "synthseg-label-maps" / "training_seg_20.nii.gz"


def test_head_top_ignores_how_much_neck_the_scan_holds() -> None:
    # a ball (the head, radius 60 mm) on a cylinder (the neck) of two lengths, on a tilted grid
    def scan(neck_mm: float) -> sitk.Image:
        z, y, x = np.mgrid[-140:80:2, -100:100:2, -100:100:2].astype(float)
        head = (x**2 + y**2 + z**2 < 60**2) | ((x**2 + (y + 10) ** 2 < 30**2) & (z < 0) & (z > -neck_mm))
        image = sitk.GetImageFromArray((head * 500.0 + 5).astype(np.float32))
        image.SetSpacing((2.0, 2.0, 2.0))
        image.SetOrigin((-100.0, -100.0, -140.0))
        return image
    short, long = head_top(scan(70)), head_top(scan(140))
    assert short == pytest.approx(long, abs=1.0)
    assert short[2] == pytest.approx(58.0, abs=2.5) and abs(short[0]) < 2
    moments = [np.array(sitk.CenteredTransformInitializer(scan(n), scan(n), sitk.Euler3DTransform(),
               sitk.CenteredTransformInitializerFilter.MOMENTS).GetCenter()) for n in (70, 140)]
    assert abs(moments[0][2] - moments[1][2]) > 5  # what the centre of mass would have done


@pytest.mark.parametrize(("name", "modality"), [
    ("T1_post_gd.nii.gz", "t1c"), ("t1ce.nrrd", "t1c"), ("sub-01_T1c.mha", "t1c"), ("AX FLAIR.nii", "t2f"),
    ("t2f.nii.gz", "t2f"), ("T2.mha", "t2w"), ("t2w_tse", "t2w"), ("t1.nii", "t1n"), ("case-t1n.nii.gz", "t1n"),
    ("series_7", None), ("notes.txt", None), ("BraTS2021_00006_t1ce.nii.gz", "t1c"),
    ("BraTS20_Training_001_t1.nii.gz", "t1n"), ("BraTS-GLI-00000-000-t2w.nii.gz", "t2w"),
    # series descriptions as scanners write them
    ("AX T1 +C", "t1c"), ("T1 MPRAGE +C", "t1c"), ("t1_mprage_tra_KM", "t1c"), ("post_T1", "t1c"), ("T1 C+", "t1c"),
    ("AX T1 FLAIR POST", "t1c"), ("SAG T1 pre", "t1n"), ("T1_pre_contrast", "t1n"), ("T1W_SE", "t1n"),
    ("AX T1 FLAIR", "t1n"), ("t2_tse_tra", "t2w"), ("T2 FLAIR", "t2f"), ("t2_tirm_tra_dark-fluid", "t2f"),
    ("T2*", None), ("AX T2 STAR", None), ("SWI", None), ("DWI", None), ("ADC", None), ("localizer", None),
])
def test_modality_names(name: str, modality: str | None) -> None:
    assert modality_of(name) == modality


def test_a_case_from_files_a_mapping_and_a_dicom_series(tmp_path: Path) -> None:
    case = tmp_path / "patient-1"
    case.mkdir()
    sitk.WriteImage(small_image(0), str(case / "T1_post_gd.nrrd"))
    sitk.WriteImage(small_image(1), str(case / "flair.mha"))
    sitk.WriteImage(small_image(2), str(case / "t2.nii.gz"))
    write_dicom_series(small_image(3), case / "series_3")
    assert "no t1n" in native_case(case).problem
    (case / "modalities.json").write_text(json.dumps({"t1c": "T1_post_gd.nrrd", "t1n": "series_3",
                                                      "t2w": "t2.nii.gz", "t2f": "flair.mha"}))
    found = find_native_cases(tmp_path)
    assert [c.case_id for c in found] == ["patient-1"] and not found[0].problem
    encoding = locale.getpreferredencoding(False)
    series = read_native(found[0].sources["t1n"], "patient-1").image
    assert locale.getpreferredencoding(False) == encoding  # GDCM's switch to the "C" locale is undone
    assert series.GetSize() == (20, 18, 6)
    assert series.GetSpacing() == pytest.approx((1.2, 1.2, 5.0), abs=1e-3)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(series), sitk.GetArrayFromImage(small_image(3)))


def test_dicom_series_folders_are_recognised_by_their_series_description(tmp_path: Path) -> None:
    case = tmp_path / "patient-2"
    for number, description in [(3, "AX T1 pre"), (5, "AX T1 +C"), (7, "AX T2 TSE"), (9, "AX FLAIR"), (11, "DWI")]:
        write_dicom_series(small_image(number), case / f"series_{number}", description)
    assert [(s.description, s.number) for s in dicom_series(case / "series_5", case)] == [("AX T1 +C", "1")]
    found = native_case(case)
    assert not found.problem
    assert {m: p.name for m, p in found.sources.items()} == {
        "t1n": "series_3", "t1c": "series_5", "t2w": "series_7", "t2f": "series_9"}
    shutil.rmtree(case / "series_5")
    assert native_case(case).problem == ("no t1c; not recognised: series_11 ('DWI'): name each file or series "
                                         "folder by its modality or list them in modalities.json")


def test_a_pacs_export_with_several_series_in_one_nested_folder(tmp_path: Path) -> None:
    export = tmp_path / "patient-3" / "DICOM" / "ST000001"
    for number, description in [(3, "t1_se_tra"), (5, "t1_se_tra_KM"), (7, "t2_tse_tra"), (9, "t2_tirm_tra_dark-fluid"),
                                (11, "localizer")]:
        write_dicom_series(small_image(number), export, description, number)
    found = find_native_cases(tmp_path)
    assert [c.case_id for c in found] == ["patient-3"] and not found[0].problem
    assert {m: p.name for m, p in found[0].sources.items()} == dict.fromkeys(MODALITIES, "ST000001")
    t1c = read_native(found[0].sources["t1c"], "patient-3", found[0].series["t1c"]).image
    np.testing.assert_array_equal(sitk.GetArrayFromImage(t1c), sitk.GetArrayFromImage(small_image(5)))
    with pytest.raises(InputError, match="ST000001 holds 5 DICOM series, not one"):
        read_native(export, "patient-3")
    # series a mapping names by description or number (0020,0011), where the descriptions are not understood
    mapping = {"t1n": "t1_se_tra", "t1c": "localizer", "t2w": "T2_TSE_TRA", "t2f": "9"}
    (tmp_path / "patient-3" / "modalities.json").write_text(json.dumps(mapping))
    mapped = native_case(tmp_path / "patient-3")
    assert not mapped.problem and mapped.series["t1c"].endswith(".1125.1.11")
    assert mapped.series["t2f"] == found[0].series["t2f"]
    shutil.copytree(export, tmp_path / "patient-4")  # all series straight in the case folder
    assert {c.case_id: set(c.series) for c in find_native_cases(tmp_path)}["patient-4"] == set(MODALITIES)
    (tmp_path / "patient-3" / "modalities.json").write_text(json.dumps({**mapping, "t1c": "t1 +c"}))
    assert "names t1 +c, not found as a file, a folder, or the description" in native_case(
        tmp_path / "patient-3").problem


def test_one_mapping_for_a_whole_run_names_series_by_description_with_alternatives(tmp_path: Path) -> None:
    protocols = {"patient-5": ["T1 SE", "T1 SE +C", "T2 TSE", "FLAIR ax"],
                 "patient-6": ["T1 SE", "T1 MPRAGE +C", "T2 TSE", "FLAIR ax"],
                 "patient-7": ["T1 SE", "T1 MPRAGE", "T2 TSE", "FLAIR ax"]}
    for case, descriptions in protocols.items():
        for number, description in enumerate(descriptions, start=2):
            write_dicom_series(small_image(number), tmp_path / case / "export", description, number)
    (tmp_path / "modalities.json").write_text(json.dumps(
        {"t1n": "T1 SE", "t1c": ["T1 SE +C", "T1 MPRAGE +C"], "t2w": "T2 TSE", "t2f": "FLAIR ax"}))
    found = {c.case_id: c for c in find_native_cases(tmp_path)}
    assert not found["patient-5"].problem and not found["patient-6"].problem
    assert found["patient-6"].series["t1c"].endswith(".1125.1.3")  # the second name of the list
    assert found["patient-7"].problem == ("modalities.json names T1 SE +C or T1 MPRAGE +C, not found as a file, a "
                                          "folder, or the description or number of exactly one DICOM series")


def test_an_unreadable_file_is_one_clear_error(tmp_path: Path) -> None:
    broken = tmp_path / "t1c.nrrd"
    broken.write_bytes(b"NRRD0004\nnot really\n")
    with pytest.raises(Exception, match=r"case-9: cannot read t1c.nrrd .*re-export"):
        read_native(broken, "case-9")


def _with_values(image: sitk.Image, change) -> sitk.Image:
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    change(array)
    changed = sitk.GetImageFromArray(array)
    changed.CopyInformation(image)
    return changed


@pytest.mark.parametrize(("image", "message"), [
    (_with_values(small_image(1), lambda a: a.__setitem__((2, 3, 4), np.nan)), "contains NaN or infinite values"),
    (_with_values(small_image(1), lambda a: a.fill(0)), "is all zero"),
    (small_image(1, size=(20, 18, 2)), "has only 2 slices .*not a localiser"),
])
def test_a_native_scan_that_cannot_be_registered_is_named_before_registration(
        tmp_path: Path, image: sitk.Image, message: str) -> None:
    path = tmp_path / "flair.nrrd"
    sitk.WriteImage(image, str(path))
    with pytest.raises(InputError, match=rf"case-3: flair.nrrd {message}"):
        read_native(path, "case-3")


@dataclass(frozen=True)
class PreprocessRun:
    """One ``htcnns segment --preprocess`` run on a folder of two cases: patient-a, a simulated native case of a
    real BraTS case (``truth``), and patient-b, its T1c alone."""

    images: dict[str, sitk.Image]
    truth: NativeSimulation
    root: Path
    done: subprocess.CompletedProcess

    @property
    def kept(self) -> Path:
        return self.root / "bs" / "cases" / "patient-a"


@pytest.fixture(scope="module")
def preprocess_run(tmp_path_factory: pytest.TempPathFactory) -> PreprocessRun:
    if not REAL_CASE.is_dir():
        pytest.skip("../shared/data is absent")
    root = tmp_path_factory.mktemp("preprocess")
    atlas = load_atlas()
    images = brats_space_images(REAL_CASE, atlas.head)
    truth = simulate_native(images, atlas.head, atlas.brain, seed=5)
    native = root / "in"
    (native / "patient-a").mkdir(parents=True)
    for modality, image in truth.images.items():
        name = {"t1c": "T1_post_gd.nrrd", "t1n": "t1.mha", "t2w": "t2.nii.gz", "t2f": "FLAIR.nii.gz"}[modality]
        sitk.WriteImage(image, str(native / "patient-a" / name))
    (native / "patient-b").mkdir()
    sitk.WriteImage(truth.images["t1c"], str(native / "patient-b" / "t1c.nrrd"))
    shutil.copytree(native / "patient-a", native / "patient-c")  # its T1c's slices stored top to bottom, the header
    flipped = sitk.GetImageFromArray(sitk.GetArrayFromImage(truth.images["t1c"])[::-1].copy())  # not saying so
    flipped.CopyInformation(truth.images["t1c"])
    sitk.WriteImage(flipped, str(native / "patient-c" / "T1_post_gd.nrrd"))
    for number, (modality, description) in enumerate(  # patient-a again as a PACS export of DICOM series
            [("t1n", "AX T1 SE"), ("t1c", "T1 MPRAGE +C"), ("t2w", "t2_tse_tra"), ("t2f", "AX FLAIR")], start=3):
        series = sitk.Cast(sitk.Round(truth.images[modality]), sitk.sitkInt16)
        write_dicom_series(series, native / "patient-e" / "DICOM" / f"SE{number:06d}", description, number)
    shutil.copytree(native / "patient-e", native / "patient-f")  # its T2 series holds a second echo
    second_echo = sitk.Cast(sitk.Round(truth.images["t2w"] * 0.5), sitk.sitkInt16)
    write_dicom_series(second_echo, native / "patient-f" / "DICOM" / "SE000005", "t2_tse_tra", 5, prefix="E2",
                       slice_tags=lambda z: {"0018|0086": "2"})
    (native / "patient-e" / "DICOM" / "SE000006" / "IM06012").unlink()  # a FLAIR slice missing
    shutil.copytree(native / "patient-a", native / "patient-d")  # its T2 holds the lower half of the slices only
    t2 = truth.images["t2w"]
    sitk.WriteImage(t2[:, :, : t2.GetSize()[2] // 2], str(native / "patient-d" / "t2.nii.gz"))
    models = save_tiny_models(root / "models", roi=96)
    done = subprocess.run([sys.executable, "-m", "htcnns.cli", "segment", "-i", str(native), "-o", str(root / "out"),
                           "--models", str(models), "--preprocess", "--keep-brats-space", str(root / "bs"),
                           "--quiet"], capture_output=True, text=True, encoding="utf-8", timeout=600)
    return PreprocessRun(images, truth, root, done)


@pytest.mark.slow
def test_simulated_native_case_is_registered_stripped_and_labels_go_back(preprocess_run: PreprocessRun) -> None:
    run = preprocess_run
    assert {run.truth.images[m].GetSpacing()[2] for m in MODALITIES} == {2.0, 5.0, 6.0}
    to_native = sitk.ReadTransform(str(run.kept / "to-native.tfm"))
    assert registration_error_mm(to_native, run.truth, run.images["t1c"] != 0) < 1.5
    brain_image = sitk.ReadImage(str(run.kept / "patient-a-brain.nii.gz"))
    brain = sitk.GetArrayFromImage(brain_image) > 0
    assert dice(brain, run.truth.in_atlas_space(run.images["t1c"] != 0)) > 0.85  # measured 0.92 (docs)
    # a BraTS-space blob (on the atlas grid, as the kept brain mask) goes back onto the native T1c grid where the
    # true transform puts it
    blob = sitk.GetImageFromArray(np.zeros(brain.shape, np.uint8))
    blob.CopyInformation(brain_image)
    blob[100:140, 110:150, 60:90] = 2
    sitk.WriteImage(blob, str(run.root / "blob.nii.gz"))
    back = native_labels(run.root / "blob.nii.gz", run.kept)
    native_t1c = run.truth.images["t1c"]
    assert back.GetSize() == native_t1c.GetSize()
    assert back.GetSpacing() == pytest.approx(native_t1c.GetSpacing(), abs=1e-5)
    expected = sitk.Resample(blob, native_t1c, run.truth.native_to_atlas, sitk.sitkNearestNeighbor)
    ours, theirs = (sitk.GetArrayViewFromImage(x) == 2 for x in (back, expected))
    assert dice(ours, theirs) > 0.95


@pytest.mark.slow
def test_segment_preprocess_writes_labels_on_the_native_grid(preprocess_run: PreprocessRun) -> None:
    done, out, native_t1c = preprocess_run.done, preprocess_run.root / "out", preprocess_run.truth.images["t1c"]
    assert done.returncode == 1, done.stderr
    assert "patient-b: no t1n, t2w, t2f" in done.stderr and "Traceback" not in done.stderr
    assert "patient-c: cannot be prepared: the registered T1c does not look like the atlas head" in done.stderr
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["patient-a.nii.gz", "patient-d.nii.gz",
                                                            "patient-e.nii.gz"]
    labels = sitk.ReadImage(str(out / "patient-a.nii.gz"))
    assert labels.GetSize() == native_t1c.GetSize()
    assert labels.GetOrigin() == pytest.approx(native_t1c.GetOrigin(), abs=1e-3)
    assert set(np.unique(sitk.GetArrayViewFromImage(labels))) <= {0, 1, 2, 3}
    assert sorted(p.name for p in preprocess_run.kept.iterdir()) == sorted(
        [*(f"patient-a-{m}.nii.gz" for m in MODALITIES), "patient-a-brain.nii.gz", NATIVE_T1C_NAME, "to-native.tfm",
         PREPARATION_NAME])
    record = json.loads((preprocess_run.kept / PREPARATION_NAME).read_text())
    assert min(record["registration"]["coverage"].values()) > 0.95 and record["registration"]["similarity"] > 0.6
    assert record["warnings"] == [] and record["seconds"]["register"] > 0
    assert record["native_spacing_mm"]["t2f"] == pytest.approx([0.9, 0.9, 6.0])
    assert record["notes"] == ["thick slices (T1 5.0 mm, T2 5.0 mm, FLAIR 6.0 mm): tumour edges across them are less "
                               "certain than on scans of 3 mm or less"]  # the T1c's 2 mm are not
    report = json.loads((out / "htcnns-report.json").read_text())
    cases = {c["case_id"]: c for c in report["cases"]}
    assert {case_id: c["status"] for case_id, c in cases.items()} == {
        "patient-a": "ok", "patient-b": "failed", "patient-c": "failed", "patient-d": "ok", "patient-e": "ok",
        "patient-f": "failed"}
    assert re.search(r"patient-f: SE000005 holds \d+ slices at only \d+ positions: several echoes", done.stderr)
    assert re.search(r"SE000006: 1 slice\(s\) missing \(the widest gap 12.0 mm, after slice 12 of \d+\); filled in",
                     cases["patient-e"]["note"]), cases["patient-e"]
    assert "Non uniform sampling" not in done.stderr
    assert re.search(r"the T2 covers only \d+ % of the brain", cases["patient-d"]["note"]), cases["patient-d"]
    assert "patient-d: the T2 covers only" in done.stderr and "covers only" not in cases["patient-a"]["note"]
    assert "thick slices (T1 5.0 mm" in cases["patient-a"]["note"] and "thick slices" not in done.stderr
    # a QC picture on the native T1c grid beside the BraTS-space one, named in the report
    picture = out / "qc" / cases["patient-a"]["qc_native_picture"]
    assert picture.name == "patient-a-native.png" and (out / "qc" / "patient-a.png").is_file()
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and picture.stat().st_size > 20_000
    assert "qc_native_picture" not in cases["patient-b"]


def test_the_brain_mask_keeps_the_csf_next_to_the_brain_and_no_more() -> None:
    radius = np.sqrt(((np.indices((72, 72, 72)) - 36) ** 2).sum(axis=0))  # mm from the centre, 1 mm voxels
    tissue, csf = radius < 24, (radius >= 24) & (radius < 29)  # a brain smaller than the atlas's, CSF, then skull

    def contrast(brain: float, fluid: float) -> np.ndarray:
        return np.where(tissue, brain, np.where(csf, fluid, 0.05)).astype(np.float32)
    t1, t2 = contrast(1.0, 0.2), contrast(1.0, 3.0)
    mask = refine_brain_mask(radius < 32, t1, t1, t2, t1, np.ones(radius.shape, bool))
    assert mask[radius < 25.3].all()  # the brain and the CSF within about 1 mm of it, as BraTS masks keep it
    assert not mask[radius > 26.5].any()  # not the CSF farther out, nor the skull, though within the atlas brain
    assert ndimage.label(mask)[1] == 1


def test_ras_affine_is_the_affine_nibabel_reads(tmp_path: Path) -> None:
    image = sitk.Image(7, 6, 5, sitk.sitkFloat32)
    image.SetSpacing((0.9, 1.1, 5.5))
    image.SetOrigin((12.0, -30.0, 4.5))
    image.SetDirection(sitk.VersorTransform((0.3, 1.0, 0.2), 0.4).GetMatrix())  # oblique
    sitk.WriteImage(image, str(tmp_path / "oblique.nii.gz"))
    assert ras_affine(image) == pytest.approx(nib.load(tmp_path / "oblique.nii.gz").affine, abs=1e-4)


@pytest.mark.slow
def test_dicom_series_of_a_pacs_export_are_prepared_as_the_same_scans_in_files(preprocess_run: PreprocessRun) -> None:
    cases = ("patient-a", "patient-e")
    files, dicom = (sitk.ReadImage(str(preprocess_run.root / "out" / f"{c}.nii.gz")) for c in cases)
    assert dicom.GetSize() == files.GetSize()
    assert dicom.GetOrigin() == pytest.approx(files.GetOrigin(), abs=1e-3)
    assert dicom.GetDirection() == pytest.approx(files.GetDirection(), abs=1e-6)
    kept = preprocess_run.root / "bs" / "cases"
    brains = (sitk.GetArrayFromImage(sitk.ReadImage(str(kept / c / f"{c}-brain.nii.gz"))) for c in cases)
    assert dice(*brains) > 0.98  # the same scans, rounded to integers


@pytest.mark.slow
def test_a_preprocess_rerun_keeps_what_is_done_and_reports_what_cannot_be_done(
        preprocess_run: PreprocessRun) -> None:
    # run again on patient-a (its label map already written) and patient-b (no T1, T2, FLAIR): nothing to segment
    again = preprocess_run.root / "again"
    for name in ("patient-a", "patient-b"):
        shutil.copytree(preprocess_run.root / "in" / name, again / name)
    out = preprocess_run.root / "out"
    before = (out / "patient-a.nii.gz").stat().st_mtime_ns
    done = subprocess.run([sys.executable, "-m", "htcnns.cli", "segment", "-i", str(again), "-o", str(out),
                           "--models", str(preprocess_run.root / "models"), "--preprocess", "--no-qc"],
                          capture_output=True, text=True, encoding="utf-8", timeout=300)
    assert done.returncode == 1, done.stderr
    assert "no cases found" not in done.stderr and "1 of 2 cases segmented (1 kept" in done.stderr
    assert (out / "patient-a.nii.gz").stat().st_mtime_ns == before
    report = json.loads((out / "htcnns-report.json").read_text())
    assert {c["case_id"]: c["status"] for c in report["cases"]} == {"patient-a": "skipped", "patient-b": "failed"}


@pytest.mark.skipif(not REAL_HEAD.is_file(), reason="../shared/data is absent")
@pytest.mark.slow
@pytest.mark.parametrize("degrees", [0, 30])
def test_a_real_head_shape_gets_a_brain_mask_close_to_its_own_brain(tmp_path: Path, degrees: float) -> None:
    # a real subject's skull, scalp, eyes and neck (not the atlas's), a random pose, thick slices; tilted 30 degrees
    # more (chin down), the orientation search finds it (without the search this head's brain Dice was 0.76)
    head = simulate_head(REAL_HEAD, seed=20)
    t1c = head.images["t1c"]
    centre = grid_centre(t1c)
    sources = {}
    for modality, image in head.images.items():
        sources[modality] = tmp_path / f"{modality}.nrrd"
        sitk.WriteImage(tilted(image, (1, 0, 0), degrees, centre), str(sources[modality]))
    prepared = to_brats_space(NativeCase("head-20", sources))
    ours = sitk.GetArrayFromImage(labels_to_native(prepared.brain, prepared)) > 0
    assert dice(ours, sitk.GetArrayViewFromImage(head.brain) > 0) > 0.93


def test_registration_figures_say_what_is_wrong() -> None:
    good = RegistrationCheck({m: 1.0 for m in MODALITIES}, 0.64, (1.05, 1.0, 0.95))
    assert good.failures() == [] and good.warnings() == []
    assert good.summary() == pytest.approx({"similarity": 0.64, "least_coverage": 1.0, "anisotropy": 1.05 / 0.95})
    partial = RegistrationCheck({"t1c": 0.3, "t1n": 1.0, "t2w": 1.0, "t2f": 1.0}, 0.9, (1.0, 1.0, 1.0))
    assert partial.failures() == ["the T1c's field of view holds only 30 % of the brain (at least 50 % is needed; "
                                  "give a T1c covering the whole head)"]
    upside_down = RegistrationCheck({m: 1.0 for m in MODALITIES}, 0.2, (1.0, 1.0, 1.0))
    assert "correlation 0.20 near the brain" in upside_down.failures()[0]
    doubtful = RegistrationCheck({"t1c": 1.0, "t1n": 1.0, "t2w": 0.7, "t2f": 1.0}, 0.45, (1.0, 1.0, 0.69))
    assert doubtful.failures() == [] and doubtful.warnings() == [
        "the T2 covers only 70 % of the brain; the rest is segmented without it",
        "the registered T1c resembles the atlas head only weakly (correlation 0.45 near the brain); check the overlay",
        "the atlas was stretched by 1.00 x 1.00 x 0.69 to fit; check the overlay"]


def test_one_scan_given_for_two_modalities_is_refused() -> None:
    rng = np.random.default_rng(3)
    shape = (20, 24, 22)
    brain = np.zeros(shape, bool)
    brain[4:16, 5:19, 4:18] = True
    everywhere = {m: np.ones(shape, bool) for m in MODALITIES}
    scans = {m: rng.normal(100, 20, shape).astype(np.float32) for m in MODALITIES}

    def checked(t1c: np.ndarray):  # the atlas head resembling the T1c, so only the twins can fail
        images = {m: sitk.GetImageFromArray(a) for m, a in {**scans, "t1c": t1c}.items()}
        head = sitk.GetImageFromArray(t1c + rng.normal(0, 5, shape).astype(np.float32))
        return check_registration(head, brain, brain, images, everywhere, np.eye(3))

    twice = checked(scans["t2w"] * 1.7 + 4)  # the T2 named as the T1c as well (another scaling, same voxels)
    assert [(a, b) for a, b, _ in twice.twins] == [("t1c", "t2w")]
    assert twice.failures() == ["the T1c and the T2 are one scan given twice (correlation 1.00 within the brain); "
                                "give each modality its own series"]
    apart = checked(scans["t1n"] + scans["t2f"])  # correlates 0.7 with each: alike, not one scan
    assert apart.twins == () and apart.failures() == []
