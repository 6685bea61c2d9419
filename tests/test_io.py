from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import LPS_AFFINE
from htcnns.errors import InputError
from htcnns.io import read_volume, write_label_map


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
    with pytest.raises(OSError, match="No space left"):
        write_label_map(np.zeros((4, 4, 4), np.uint8), reference, tmp_path / "case.nii.gz")
    assert list(tmp_path.iterdir()) == []
