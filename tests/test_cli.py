"""The htcnns command as a real subprocess: exit codes, one clear line per failure, no traceback."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import brain_volumes, write_case
from htcnns.cli import build_parser
from htcnns.inference.cases import find_cases
from htcnns.inference.report import REPORT_NAME
from htcnns.inference.validate import output_problem


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
                    "--models", str(tiny_models), "--fusion", "majority", "--oedema-opening", "3", "--mirror")
    assert result.returncode == 0, result.stderr
    assert "1 of 1 cases segmented (0 kept from an earlier run)" in result.stderr
    settings = json.loads((tmp_path / "out" / "htcnns-report.json").read_text())["settings"]
    assert (settings["fusion"], settings["oedema_opening"], settings["mirror"]) == ("majority", 3, True)


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
    from htcnns.inference.pipeline import default_models_root

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


def test_segment_options_parse_and_refuse_bad_values(capsys: pytest.CaptureFixture):
    args = build_parser().parse_args(["segment", "-i", "in", "-o", "out", "--case-timeout", "90.5", "--overwrite",
                                      "--report", "r.json"])
    assert (args.case_timeout, args.overwrite, args.report, args.no_report) == (90.5, True, Path("r.json"), False)
    for bad in ("0", "-3", "soon", "inf"):
        with pytest.raises(SystemExit) as stopped:
            build_parser().parse_args(["segment", "-i", "in", "-o", "out", "--case-timeout", bad])
        assert stopped.value.code == 2
        assert f"expected a number of seconds > 0, got {bad!r}" in capsys.readouterr().err


def start(inputs: Path, output: Path, models: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "htcnns.cli", "segment", "-i", str(inputs), "-o", str(output),
                             "--models", str(models), "--device", "cpu"], stderr=subprocess.PIPE, text=True)


def outputs(folder: Path) -> list[Path]:
    """The final label maps in ``folder`` (not the hidden temporary files of a write in progress)."""
    return sorted(p for p in folder.glob("*.nii.gz") if not p.name.startswith(".")) if folder.is_dir() else []


def wait_for_outputs(folder: Path, more_than: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 240
    while len(outputs(folder)) <= more_than and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)


def assert_outputs_valid(inputs: Path, output: Path) -> None:
    """Every file in ``output`` is a valid label map of its case or the report: nothing partial, nothing stray."""
    cases = {case.case_id: case for case in find_cases(inputs)}
    qc = output / "qc"
    assert not [p for p in qc.iterdir() if p.name.startswith(".")] if qc.is_dir() else True  # no partial picture
    for path in output.iterdir():
        if path.name not in (REPORT_NAME, "qc"):
            assert output_problem(path, cases[path.name.removesuffix(".nii.gz")].paths, {0, 1, 2, 3}) == "", path


def test_sigterm_then_kill_9_then_rerun_ends_with_every_output_correct(tmp_path: Path, tiny_models: Path):
    inputs, output = tmp_path / "in", tmp_path / "out"
    ids = [f"CASE-{number}" for number in range(5)]
    for number, case_id in enumerate(ids):
        write_case(inputs / case_id, case_id, brain_volumes((24, 28, 20), seed=number))

    stopped = start(inputs, output, tiny_models)
    wait_for_outputs(output, 0, stopped)
    stopped.send_signal(signal.SIGTERM)
    assert stopped.wait(timeout=120) == 143, stopped.stderr.read()
    stderr = stopped.stderr.read()
    assert "stopped by SIGTERM; finished outputs are complete" in stderr and "Traceback" not in stderr
    report = json.loads((output / REPORT_NAME).read_text())
    assert report["state"] == "interrupted" and report["summary"]["ok"] == len(outputs(output)) < len(ids)
    assert_outputs_valid(inputs, output)  # and no temporary file: only outputs and the report

    killed = start(inputs, output, tiny_models)
    done = len(outputs(output))
    wait_for_outputs(output, done, killed)
    killed.kill()
    killed.wait(timeout=60)
    killed.stderr.close()

    rerun = subprocess.run([sys.executable, "-m", "htcnns.cli", "segment", "-i", str(inputs), "-o", str(output),
                            "--models", str(tiny_models), "--device", "cpu"], capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert [p.name for p in outputs(output)] == [f"{case_id}.nii.gz" for case_id in ids]
    assert_outputs_valid(inputs, output)
    summary = json.loads((output / REPORT_NAME).read_text())["summary"]
    assert summary["skipped"] >= done + 1 and summary["skipped"] + summary["ok"] == len(ids), (done, rerun.stderr)


SOCKET_BLOCKER = '''
import os, socket
class _NoNetwork(socket.socket):
    def __init__(self, *args, **kwargs):
        raise OSError("network access attempted during a run")
socket.socket = _NoNetwork
socket.create_connection = lambda *a, **k: _NoNetwork()
open(os.environ["BLOCKER_MARK"], "w").write("loaded")
'''


def test_segments_with_the_network_blocked(case_dir: Path, tmp_path: Path, tiny_models: Path):
    """Sockets raise in Python (sitecustomize); where unshare works, the run is also in an empty network namespace."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(SOCKET_BLOCKER)
    env = os.environ | {"PYTHONPATH": str(blocker), "BLOCKER_MARK": str(tmp_path / "mark")}
    namespace = next((prefix for prefix in (["unshare", "-n"], ["unshare", "-rn"])
                      if shutil.which("unshare") and subprocess.run([*prefix, "true"]).returncode == 0), [])
    result = subprocess.run([*namespace, sys.executable, "-m", "htcnns.cli", "segment", "-i", str(case_dir.parent),
                             "-o", str(tmp_path / "out"), "--models", str(tiny_models)],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "mark").read_text() == "loaded"
    assert (tmp_path / "out" / "BraTS-GLI-00002-000.nii.gz").is_file()
