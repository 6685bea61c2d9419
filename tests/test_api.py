"""The Python API (htcnns.Segmenter): folder, paths and arrays give one result; the README example runs."""

import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import brain_volumes, require_real_case, write_case
from htcnns import Segmenter
from htcnns.errors import InputError
from htcnns.labels import MODALITIES

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def segmenter(tiny_models: Path) -> Segmenter:
    return Segmenter(tiny_models, device="cpu")


def test_folder_paths_and_arrays_give_the_same_result(segmenter: Segmenter, tmp_path: Path):
    folder = write_case(tmp_path / "C-1", "C-1", brain_volumes(seed=3))
    from_folder = segmenter.segment(folder)
    paths = {m: next(folder.glob(f"*-{m}.nii.gz")) for m in MODALITIES}
    from_paths = segmenter.segment(**paths)
    image = nib.load(paths["t1c"])
    arrays = {m: np.asarray(nib.load(p).dataobj) for m, p in paths.items()}
    from_arrays = segmenter.segment(**arrays, affine=image.affine)
    for result in (from_paths, from_arrays):
        assert np.array_equal(result.labels, from_folder.labels) and np.allclose(result.affine, image.affine)
    assert from_folder.labels.shape == image.shape and from_folder.labels.dtype == np.uint8
    assert set(from_folder.volumes_ml) == {"NCR", "ED", "ET", "TC", "WT"} and from_folder.review is not None
    assert {"read", "preprocess", "unet", "fuse"} <= set(from_folder.seconds)
    saved = from_folder.save(tmp_path / "out" / "C-1.nii.gz")
    assert np.array_equal(np.asarray(nib.load(saved).dataobj), from_folder.labels)


def test_bad_inputs_are_one_clear_error(segmenter: Segmenter, tmp_path: Path):
    with pytest.raises(InputError, match="give all four images .* missing t2w, t2f"):
        segmenter.segment(t1n=np.zeros((8, 8, 8)), t1c=np.zeros((8, 8, 8)), affine=np.eye(4))
    with pytest.raises(InputError, match="arrays need the affine"):
        segmenter.segment(**{m: np.zeros((8, 8, 8)) for m in MODALITIES})
    write_case(tmp_path / "two" / "A-1", "A-1", brain_volumes())
    write_case(tmp_path / "two" / "B-1", "B-1", brain_volumes())
    with pytest.raises(InputError, match="expected one case, found 2; use segment_folder"):
        segmenter.segment(tmp_path / "two")


def test_readme_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The README's Python example, as written, on the real case (bundled models)."""
    case = require_real_case()
    example = re.search(r"<!-- api-example -->\n```python\n(.*?)```", README.read_text(), re.S)
    assert example, "README.md lost its Python API example"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "BraTS-GLI-00001-000").mkdir()
    for path in case.glob("BraTS-GLI-00001-000-t*.nii.gz"):
        shutil.copy(path, tmp_path / "BraTS-GLI-00001-000")  # links out of the input folder are refused
    namespace: dict = {}
    exec(compile(example.group(1), "README.md", "exec"), namespace)  # noqa: S102 - our own README
    assert namespace["result"].volumes_ml["WT"] > 10
    assert (tmp_path / "BraTS-GLI-00001-000.nii.gz").is_file()
