"""htcnns segment's QC folder and review fields, and shards run as real processes then merged."""

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from conftest import brain_volumes, write_case
from htcnns.inference.shards import parse_shard, select_shard


def htcnns(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "htcnns.cli", *args], capture_output=True, text=True, timeout=300)


def cases(root: Path, count: int) -> list[str]:
    ids = [f"SITE-{k:03d}" for k in range(count)]
    for k, case_id in enumerate(ids):
        write_case(root / case_id, case_id, brain_volumes((24, 28, 20), seed=k))
    return ids


def test_segment_writes_qc_pictures_page_and_review(tmp_path: Path, tiny_models: Path):
    ids = cases(tmp_path / "in", 2)
    result = htcnns("segment", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--models", str(tiny_models),
                    "--device", "cpu")
    assert result.returncode == 0, result.stderr
    qc = tmp_path / "out" / "qc"
    assert {p.name for p in qc.iterdir()} >= {"index.html", "cases.csv", *(f"{i}.png" for i in ids)}
    report = json.loads((tmp_path / "out" / "htcnns-report.json").read_text())
    for case in report["cases"]:
        assert case["qc_picture"] == f"{case['case_id']}.png" and set(case["volumes_ml"]) >= {"WT", "TC", "ET"}
        assert isinstance(case["needs_review"], bool) and 0 <= case["review_score"] <= 1
        assert {"read", "validate", "preprocess", "unet", "postprocess", "fuse", "write", "qc"} <= set(case["stages"])
    page = (qc / "index.html").read_text()
    assert all(i in page for i in ids) and "finished" in page  # rewritten once the run closed
    quiet = htcnns("segment", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out2"), "--models",
                   str(tiny_models), "--device", "cpu", "--no-qc", "--quiet")
    assert quiet.returncode == 0 and quiet.stderr == "" and not (tmp_path / "out2" / "qc").exists()


def test_shards_as_processes_cover_every_case_once_and_merge_to_one_run(tmp_path: Path, tiny_models: Path):
    ids = cases(tmp_path / "in", 5)
    common = ["--models", str(tiny_models), "--device", "cpu", "--no-qc"]
    assert htcnns("segment", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "single"), *common).returncode == 0
    processes = [subprocess.Popen([sys.executable, "-m", "htcnns.cli", "segment", "-i", str(tmp_path / "in"), "-o",
                                   str(tmp_path / f"shard-{i}"), "--shard", f"{i}/3", *common],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(3)]
    assert [p.wait(timeout=300) for p in processes] == [0, 0, 0]
    written = sorted(p.name for i in range(3) for p in (tmp_path / f"shard-{i}").glob("*.nii.gz"))
    assert written == sorted(f"{i}.nii.gz" for i in ids)
    for i in range(3):
        assert sorted(p.stem.split(".")[0] for p in (tmp_path / f"shard-{i}").glob("*.nii.gz")) == \
            sorted(select_shard(ids, parse_shard(f"{i}/3")))
    reports = [str(tmp_path / f"shard-{i}" / "htcnns-report.json") for i in range(3)]
    merged_path = tmp_path / "merged.json"
    assert htcnns("report", "merge", *reports, "-o", str(merged_path), "--qc", str(tmp_path / "page")).returncode == 0
    merged, single = (json.loads(p.read_text()) for p in (merged_path, tmp_path / "single" / "htcnns-report.json"))
    assert [c["case_id"] for c in merged["cases"]] == [c["case_id"] for c in single["cases"]] == ids
    assert merged["summary"] == single["summary"] and merged["warnings"] == []
    assert [c["status"] for c in merged["cases"]] == ["ok"] * 5
    for case in merged["cases"]:
        shard_file = Path(case["report"]).parent / f"{case['case_id']}.nii.gz"
        assert np.array_equal(np.asarray(nib.load(shard_file).dataobj),
                              np.asarray(nib.load(tmp_path / "single" / f"{case['case_id']}.nii.gz").dataobj))
    assert (tmp_path / "page" / "index.html").is_file()


def test_inconsistent_scheduler_variables_are_one_line(tmp_path: Path, tiny_models: Path):
    cases(tmp_path / "in", 1)
    result = subprocess.run([sys.executable, "-m", "htcnns.cli", "segment", "-i", str(tmp_path / "in"), "-o",
                             str(tmp_path / "out"), "--models", str(tiny_models), "--device", "cpu"],
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "JOB_COMPLETION_INDEX": "2"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "ERROR cannot tell this job's shard: JOB_COMPLETION_INDEX is set" in result.stderr
