"""shards.py: parsing, the scheduler's environment, stable hash sharding, merging shard reports; cluster files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from htcnns.inference.batch_page import CSV_NAME, INDEX_NAME
from htcnns.inference.cases import Case
from htcnns.inference.shards import (
    Shard,
    in_shard,
    merge_reports,
    parse_shard,
    select_shard,
    shard_from_environment,
    write_merged,
)

ROOT = Path(__file__).resolve().parents[1]
IDS = [f"BraTS-GLI-{number:05d}-000" for number in range(50)]


def test_parse_shard():
    assert parse_shard("0/4") == Shard(0, 4) and parse_shard(" 3 / 4 ") == Shard(3, 4) and str(Shard(2, 5)) == "2/5"
    assert parse_shard("0/1") == Shard(0, 1)
    for text, words in (("4/4", "0-based, the last of 4 is 3/4"), ("-1/4", "outside 0..3"), ("1/0", "at least 1"),
                        ("1", "I/N"), ("a/b", "I/N"), ("1/2/3", "I/N"), ("", "I/N"), ("1.5/3", "I/N")):
        with pytest.raises(ValueError, match=words):
            parse_shard(text)


def test_shard_from_slurm_and_kubernetes_environments():
    assert shard_from_environment({}) is None
    assert shard_from_environment({"HTCNNS_SHARD_COUNT": "4"}) is None
    slurm = {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "0"}
    assert shard_from_environment(slurm) == Shard(3, 4)
    one_based = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "8", "SLURM_ARRAY_TASK_MIN": "1",
                 "SLURM_ARRAY_TASK_MAX": "8"}
    assert shard_from_environment(one_based) == Shard(0, 8)
    assert shard_from_environment({**one_based, "SLURM_ARRAY_TASK_ID": "8"}) == Shard(7, 8)
    stepped = {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "7",
               "SLURM_ARRAY_TASK_STEP": "2"}  # --array=1-7:2, no count: from min, max and step
    assert shard_from_environment(stepped) == Shard(2, 4)
    kubernetes = {"JOB_COMPLETION_INDEX": "2", "HTCNNS_SHARD_COUNT": "3"}
    assert shard_from_environment(kubernetes) == Shard(2, 3)
    assert shard_from_environment({**kubernetes, **slurm}) == Shard(3, 4)  # Slurm first
    for env, words in (({"JOB_COMPLETION_INDEX": "0"}, "HTCNNS_SHARD_COUNT is not"),
                       ({"JOB_COMPLETION_INDEX": "3", "HTCNNS_SHARD_COUNT": "3"}, "outside 0..2"),
                       ({"JOB_COMPLETION_INDEX": "x", "HTCNNS_SHARD_COUNT": "3"}, "not an integer"),
                       ({"SLURM_ARRAY_TASK_ID": "5"}, "pass --shard"),
                       ({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "1"},
                        "contiguous")):  # --array=1,3,5
        with pytest.raises(ValueError, match=words):
            shard_from_environment(env)


def test_every_case_in_exactly_one_shard_and_stable():
    for count in range(1, 6):
        shards = [select_shard(IDS, Shard(index, count)) for index in range(count)]
        assert sorted(case for shard in shards for case in shard) == IDS
        if count > 1:
            assert all(shards)  # 50 ids: no shard is empty
        more = [*IDS[::-1], "new-case", "BraTS-GLI-99999-000", "<odd id>\udcff"]  # other order, more cases
        for index, shard in enumerate(shards):
            assert [c for c in select_shard(more, Shard(index, count)) if c in IDS] == sorted(shard, reverse=True)
    cases = [Case(case_id) for case_id in IDS]
    assert [case.case_id for case in select_shard(cases, Shard(1, 3))] == select_shard(IDS, Shard(1, 3))
    assert select_shard(cases, None) == cases
    assert in_shard("BraTS-GLI-00000-000", Shard(0, 1))


def case(case_id: str, status: str, **extra: Any) -> dict[str, Any]:
    return {"case_id": case_id, "status": status, "error": f"{case_id}: boom" if status == "failed" else "",
            "seconds": 1.0, "output": f"{case_id}.nii.gz" if status == "ok" else None, "note": "", **extra}


def write_report(folder: Path, shard: str, cases: list[dict[str, Any]], state: str = "finished",
                 updated: str = "2026-12-02T10:10:00+00:00", models: str = "ab") -> Path:
    path = folder / "htcnns-report.json"
    folder.mkdir(parents=True, exist_ok=True)
    report = {"format": "htcnns-report/1", "state": state, "started": f"2026-12-02T10:0{shard[0]}:00+00:00",
              "updated": updated, "input": "/input", "output": "/output", "versions": {"htcnns": "0.1.0"},
              "device": f"cuda:0 (GPU {shard})", "settings": {"fusion": "staple", "shard": shard},
              "models": [{"name": "nnunet", "architecture": "nnunet", "sha256": models * 32}],
              "summary": {}, "cases": cases}
    path.write_text(json.dumps(report), encoding="utf-8")
    return path


def test_merge_reports_written_to_disk(tmp_path: Path):
    out = tmp_path / "out"
    first = write_report(out / "shard-0", "0/3", [case("a", "ok", qc_picture="a.png", qc_thumbnail="a-thumb.png",
                                                       volumes_ml={"WT": 2.0}), case("b", "failed"),
                                                  case("d", "pending")], updated="2026-12-02T10:20:00+00:00")
    (out / "shard-0" / "qc").mkdir()
    (out / "shard-0" / "qc" / "a.png").write_bytes(b"\x89PNG picture")
    (out / "shard-0" / "qc" / "a-thumb.png").write_bytes(b"\x89PNG thumb")
    second = write_report(out / "shard-1", "1/3", [case("c", "ok"), case("b", "ok"), case("d", "failed")],
                          state="interrupted", models="cd")
    merged = merge_reports([first, second])
    assert [(c["case_id"], c["status"]) for c in merged["cases"]] == [("a", "ok"), ("b", "ok"), ("c", "ok"),
                                                                      ("d", "failed")]
    assert merged["cases"][1]["report"] == str(second) and merged["cases"][0]["report"] == str(first)
    assert merged["summary"] == {"ok": 3, "skipped": 0, "failed": 1, "pending": 0, "interrupted": 0}
    assert merged["state"] == "interrupted" and merged["started"] == "2026-12-02T10:00:00+00:00"
    assert merged["format"] == "htcnns-report/1" and merged["device"] == "cuda:0 (GPU 0/3)"
    assert [s["shard"] for s in merged["shards"]] == ["0/3", "1/3"] and merged["shards"][1]["state"] == "interrupted"
    assert {(d["case_id"], d["kept_status"], d["dropped_status"]) for d in merged["duplicates"]} == {
        ("b", "ok", "failed"), ("d", "failed", "pending")}
    assert any("in models" in w for w in merged["warnings"]) and any("2/3" in w for w in merged["warnings"])
    assert not any("settings" in w for w in merged["warnings"])  # only the shard differs
    assert "shard" not in merged["settings"]

    # equal outcomes: the report updated last wins
    again = write_report(out / "rerun", "0/3", [case("a", "ok", note="rerun")], updated="2026-12-02T11:00:00+00:00")
    assert merge_reports([again, first])["cases"][0]["note"] == "rerun"
    assert merge_reports([first, again])["cases"][0]["note"] == "rerun"

    target = out / "merged.json"
    written = write_merged([first, second], target, qc_dir=out / "qc")
    assert json.loads(target.read_text(encoding="utf-8"))["cases"] == written["cases"]
    assert (out / "qc" / "a.png").read_bytes() == b"\x89PNG picture" and (out / "qc" / "a-thumb.png").is_file()
    assert (out / "qc" / INDEX_NAME).is_file() and (out / "qc" / CSV_NAME).is_file()
    assert 'href="a.png"' in (out / "qc" / INDEX_NAME).read_text(encoding="utf-8")
    assert not list(out.rglob(".htcnns-*"))


def test_merge_refuses_what_is_not_a_report(tmp_path: Path):
    with pytest.raises(ValueError, match="no reports"):
        merge_reports([])
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="cannot read the report"):
        merge_reports([bad])
    bad.write_text('{"format": "other", "cases": []}', encoding="utf-8")
    with pytest.raises(ValueError, match="not an HT-CNNs report"):
        merge_reports([bad])
    with pytest.raises(ValueError, match="cannot read"):
        merge_reports([tmp_path / "missing.json"])


def yaml_documents(path: Path) -> list[Any]:
    """The YAML documents of ``path``, parsed by PyYAML here or by the system Python's; skip when neither has it."""
    try:
        import yaml
    except ImportError:
        system = shutil.which("python3")
        code = "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))"
        if system is None or system == sys.executable:
            pytest.skip("PyYAML is not installed")
        done = subprocess.run([system, "-c", code, str(path)], capture_output=True, text=True, check=False)
        if "No module named" in done.stderr:
            pytest.skip("PyYAML is not installed")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)
    return list(yaml.safe_load_all(path.read_text(encoding="utf-8")))


def test_cluster_files_parse():
    script = ROOT / "container" / "slurm" / "segment-array.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    assert "--shard" in script.read_text(encoding="utf-8")
    documents = [d for d in yaml_documents(ROOT / "container" / "kubernetes" / "indexed-job.yaml") if d]
    job = next(d for d in documents if d["kind"] == "Job" and d["spec"].get("completionMode") == "Indexed")
    spec = job["spec"]
    assert spec["completions"] == spec["parallelism"]
    container = spec["template"]["spec"]["containers"][0]
    env = {item["name"]: item for item in container["env"]}
    assert env["HTCNNS_SHARD_COUNT"]["value"] == str(spec["completions"])
    assert {"NetworkPolicy"} <= {d["kind"] for d in documents}
