from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import LPS_AFFINE
from htcnns.errors import InputError, OutputError
from htcnns.inference.io import MAX_VOXELS, atomic_write_text, read_volume, remove_partial_files, write_label_map


def test_read_squeezes_trailing_singleton_axis(tmp_path: Path):
    path = tmp_path / "x-t1c.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 5, 6, 1), np.int16), LPS_AFFINE), path)
    volume = read_volume(path, "x")
    assert volume.data.shape == (4, 5, 6) and volume.data.dtype == np.float32
    assert np.array_equal(volume.affine, LPS_AFFINE)


def test_unreadable_file_is_one_input_error(tmp_path: Path):
    path = tmp_path / "broken-t1c.nii.gz"
    path.write_bytes(b"not a nifti at all")
    with pytest.raises(InputError, match=r"broken: cannot read broken-t1c.nii.gz as NIfTI"):
        read_volume(path, "broken")


@pytest.mark.parametrize(("qform_code", "sform_code"), [(1, 1), (1, 0), (0, 2)], ids=["both", "qform", "sform"])
def test_label_map_keeps_geometry_and_header_codes(tmp_path: Path, qform_code: int, sform_code: int):
    reference = nib.Nifti1Image(np.zeros((6, 7, 8), np.int16), LPS_AFFINE)
    reference.set_qform(LPS_AFFINE, code=qform_code)
    reference.set_sform(LPS_AFFINE, code=sform_code)
    labels = np.zeros((6, 7, 8), np.uint8)
    labels[1:3, 2:4, 3:5] = 3
    out = tmp_path / "out" / "case.nii.gz"
    write_label_map(labels, reference, out)
    written = nib.load(out)
    assert written.get_data_dtype() == np.uint8
    assert np.array_equal(np.asarray(written.dataobj), labels)
    assert np.allclose(written.affine, LPS_AFFINE)
    assert (int(written.header["qform_code"]), int(written.header["sform_code"])) == (qform_code, sform_code)
    assert [p.name for p in out.parent.iterdir()] == ["case.nii.gz"]


def test_failed_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A write that dies half-way (here: disk full after some bytes) leaves neither a partial nor a final file."""

    def half_write_then_fail(image, filename):
        Path(filename).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(nib, "save", half_write_then_fail)
    reference = nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), LPS_AFFINE)
    with pytest.raises(OutputError, match=r"cannot write .*case.nii.gz: No space left on device"):
        write_label_map(np.zeros((4, 4, 4), np.uint8), reference, tmp_path / "case.nii.gz")
    assert list(tmp_path.iterdir()) == []


def test_interrupted_write_leaves_no_file_and_keeps_the_old_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A stop (SIGTERM becomes a KeyboardInterrupt) in the middle of a write removes the temporary file."""
    path = tmp_path / "report.json"
    atomic_write_text(path, "old")

    def stop_half_way(self, text, encoding, errors=None):
        Path(self).write_bytes(b"par")
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", stop_half_way)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(path, "new")
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"] and path.read_bytes() == b"old"


def test_written_files_are_mode_644(tmp_path: Path):
    write_label_map(np.zeros((3, 3, 3), np.uint8), nib.Nifti1Image(np.zeros((3, 3, 3)), LPS_AFFINE),
                    tmp_path / "c.nii.gz")
    assert (tmp_path / "c.nii.gz").stat().st_mode & 0o777 == 0o644


def test_nifti2_reference_gives_nifti1_output_with_its_geometry(tmp_path: Path):
    reference = nib.Nifti2Image(np.zeros((5, 6, 7), np.float32), LPS_AFFINE)
    reference.set_qform(LPS_AFFINE, code=1)
    write_label_map(np.ones((5, 6, 7), np.uint8), reference, tmp_path / "c.nii.gz")
    written = nib.load(tmp_path / "c.nii.gz")
    assert type(written) is nib.Nifti1Image and np.allclose(written.affine, LPS_AFFINE)


def test_huge_header_is_refused_before_reading(tmp_path: Path):
    path = tmp_path / "x-t1c.nii"
    image = nib.Nifti1Image(np.zeros((2, 2, 2), np.int16), LPS_AFFINE)
    image.header.set_data_shape((4096, 4096, 4096))
    path.write_bytes(image.header.binaryblock + b"\0" * 4)
    with pytest.raises(InputError, match=rf"x: the header of x-t1c.nii claims .* more than the {MAX_VOXELS:,}"):
        read_volume(path, "x")


def test_complex_values_are_refused(tmp_path: Path):
    path = tmp_path / "x-t1c.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((3, 3, 3), np.complex64), LPS_AFFINE), path)
    with pytest.raises(InputError, match=r"x-t1c.nii.gz holds complex64 values"):
        read_volume(path, "x")


def test_unopenable_file_names_the_os_reason(tmp_path: Path):
    with pytest.raises(InputError, match=r"cannot read gone-t1c.nii.gz as NIfTI \(No such file or no access"):
        read_volume(tmp_path / "gone-t1c.nii.gz", "gone")


def test_remove_partial_files_removes_only_ours(tmp_path: Path):
    for name in (".htcnns-abc.part.nii.gz", ".htcnns-def.part", "case.nii.gz", ".other.part"):
        (tmp_path / name).write_bytes(b"x")
    removed = remove_partial_files(tmp_path)
    assert sorted(p.name for p in removed) == [".htcnns-abc.part.nii.gz", ".htcnns-def.part"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.part", "case.nii.gz"]
