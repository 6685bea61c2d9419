"""The htcnns command as a real subprocess: exit codes, one clear line per failure, no traceback."""

import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import brain_volumes, write_case


def htcnns(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "htcnns.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_good_and_missing_modality_case(tmp_path: Path, tiny_models: Path):
    write_case(tmp_path / "in" / "GOOD-1", "GOOD-1", brain_volumes())
    broken = write_case(tmp_path / "in" / "BAD-2", "BAD-2", brain_volumes())
    (broken / "BAD-2-t1n.nii.gz").unlink()
    result = htcnns("segment", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                    "--models", str(tiny_models), "--device", "cpu", "--labels", "brats2021")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
    assert errors == ["ERROR BAD-2: missing modality t1n (need t1n, t1c, t2w, t2f)"]
    assert "Traceback" not in result.stderr
    labels = np.asarray(nib.load(tmp_path / "out" / "GOOD-1.nii.gz").dataobj)
    assert 3 not in np.unique(labels)


def test_all_good_exits_zero(case_dir: Path, tmp_path: Path, tiny_models: Path):
    result = htcnns("segment", "-i", str(case_dir.parent), "-o", str(tmp_path / "out"),
                    "--models", str(tiny_models), "--fusion", "majority")
    assert result.returncode == 0, result.stderr
    assert "1 of 1 cases segmented" in result.stderr


def test_user_errors_are_one_line(tmp_path: Path, tiny_models: Path):
    missing = htcnns("segment", "-i", str(tmp_path / "nope"), "-o", str(tmp_path / "out"),
                     "--models", str(tiny_models))
    assert missing.returncode == 2 and missing.stderr.strip().startswith("ERROR input folder")
    no_models = htcnns("segment", "-i", str(tmp_path), "-o", str(tmp_path / "out"), "--models", str(tmp_path))
    assert no_models.returncode == 2 and "no model folders" in no_models.stderr
    bad_device = htcnns("segment", "-i", str(tmp_path), "-o", str(tmp_path / "out"), "--device", "gpu")
    assert bad_device.returncode == 2 and "expected auto, cpu, cuda or cuda:N, got 'gpu'" in bad_device.stderr
    for result in (missing, no_models, bad_device):
        assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_demo_prints_dice_and_writes_output_and_picture(tmp_path: Path):
    from htcnns.pipeline import default_models_root

    if not any(default_models_root().glob("*/manifest.json")):
        pytest.skip("no bundled models")
    result = htcnns("demo", "--output", str(tmp_path / "demo"), "--device", "cpu", timeout=600)
    assert result.returncode == 0, result.stderr
    scores = dict(re.findall(r"(WT|TC|ET) (\d\.\d+)", result.stdout))
    assert set(scores) == {"WT", "TC", "ET"} and all(float(v) > 0.5 for v in scores.values()), result.stdout
    output = tmp_path / "demo" / "output" / "BraTS-DEMO-00000-000.nii.gz"
    assert f"Output: {output.resolve()}" in result.stdout
    assert nib.load(output).shape == (240, 240, 155)
    assert (tmp_path / "demo" / "overlay.png").read_bytes()[:4] == b"\x89PNG"
