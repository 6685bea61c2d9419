"""The bad-input corpus of docs/bad-input.md: every kind in one batch through the real CLI, each with its outcome.

The tables in docs/bad-input.md are the list: each row names a kind, whose builder below writes that input, and
the outcome and words the report must show. A row without a builder (or the reverse) fails.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import LPS_AFFINE, brain_volumes, write_case
from htcnns.inference.cases import display_id, find_cases
from htcnns.inference.validate import output_problem
from htcnns.labels import MODALITIES

DOC = Path(__file__).resolve().parents[1] / "docs" / "bad-input.md"
SHAPE = (24, 28, 20)
ROW = re.compile(r"^\| `(?P<kind>[^`]+)` \|(?P<what>[^|]*)\|(?P<outcome>[^|]*)\|(?P<words>.*)\|$")


def doc_table(heading: str) -> dict[str, tuple[str, str]]:
    """kind -> (outcome, words the sentence contains) from the table under ``## heading``."""
    section = DOC.read_text(encoding="utf-8").split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [ROW.match(line) for line in section.splitlines() if line.startswith("| `")]
    return {row["kind"]: (row["outcome"].strip(), row["words"].strip().strip("`")) for row in rows if row}


CASE_KINDS = doc_table("Per case (one batch)")
RUN_KINDS = doc_table("Per run")

# --- builders: each writes one kind under the input root and returns (case id, file the error must name) ----------

Built = tuple[str, str | None]


def image(seed: int = 0) -> np.ndarray:
    return brain_volumes(SHAPE, seed)


def case(root: Path, case_id: str, data: np.ndarray | None = None, **kwargs) -> Path:
    return write_case(root / case_id, case_id, image() if data is None else data, **kwargs)


def modality_file(folder: Path, case_id: str, modality: str, suffix: str = ".nii.gz") -> Path:
    return folder / f"{case_id}-{modality}{suffix}"


def swap(root: Path, case_id: str, modality: str, data: np.ndarray, affine: np.ndarray = LPS_AFFINE) -> Built:
    """A good case whose ``modality`` file is replaced by ``data`` (with ``affine``)."""
    path = modality_file(case(root, case_id), case_id, modality)
    nib.save(nib.Nifti1Image(data, affine), path)
    return case_id, path.name


def rewrite(root: Path, case_id: str, modality: str, write: Callable[[Path], object], suffix: str = ".nii.gz") -> Built:
    """A good case whose ``modality`` file is removed and made again by ``write(path)``."""
    folder = case(root, case_id)
    modality_file(folder, case_id, modality).unlink()
    path = modality_file(folder, case_id, modality, suffix)
    write(path)
    return case_id, path.name


def good(root: Path, case_id: str, **kwargs) -> Built:
    case(root, case_id, **kwargs)
    return case_id, None


def with_header(path: Path, shape: tuple[int, ...] | None = None, datatype: int | None = None) -> None:
    """Rewrite the header of an uncompressed NIfTI in place (a damaged or unusual file)."""
    header = nib.Nifti1Header.from_fileobj(path.open("rb"))
    if shape:
        header.set_data_shape(shape)
    if datatype:
        header["datatype"], header["bitpix"] = datatype, 1
    with path.open("r+b") as handle:
        handle.write(header.binaryblock)


def gzip_of(path: Path, data: np.ndarray, change: Callable[[Path], None]) -> None:
    """Save ``data`` uncompressed, let ``change`` edit the file, then gzip it to ``path``."""
    plain = path.with_suffix("")
    nib.save(nib.Nifti1Image(data, LPS_AFFINE), plain)
    change(plain)
    path.write_bytes(gzip.compress(plain.read_bytes()))
    plain.unlink()


def truncated(path: Path) -> None:
    nib.save(nib.Nifti1Image(image()[1], LPS_AFFINE), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def corrupted(path: Path) -> None:
    nib.save(nib.Nifti1Image(image()[1], LPS_AFFINE), path)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = b"\x00" * 64
    path.write_bytes(bytes(data))


def singular(path: Path) -> None:
    header = nib.Nifti1Header()
    header["sform_code"], header["qform_code"] = 1, 0
    for row in ("srow_x", "srow_y", "srow_z"):
        header[row] = 0
    nib.save(nib.Nifti1Image(image()[1], None, header), path)


def rgb(path: Path) -> None:
    values = np.zeros(SHAPE, [("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(values, LPS_AFFINE), path)


def unreadable(root: Path, outside: Path) -> Built | None:
    if os.getuid() == 0:
        return None
    case_id, name = swap(root, "BAD-unreadable", "t1c", image()[1])
    (root / case_id / name).chmod(0)
    return case_id, name


def linked(root: Path, case_id: str, target: Path) -> Built:
    folder = case(root, case_id)
    path = modality_file(folder, case_id, "t2f")
    path.unlink()
    path.symlink_to(target)
    return case_id, path.name


def odd_id(root: Path, case_id: str, folder: str) -> Built:
    write_case(root / folder, case_id, image())
    return case_id, None


def flat(root: Path, outside: Path) -> Built:
    write_case(root, "GOOD-flat", image(), suffix=".nii")
    return "GOOD-flat", None


def nested(root: Path, outside: Path) -> Built:
    write_case(root / "site" / "2024" / "batch 1" / "GOOD-nested", "GOOD-nested", image())
    return "GOOD-nested", None


def missing(root: Path, outside: Path) -> Built:
    modality_file(case(root, "BAD-missing"), "BAD-missing", "t2f").unlink()
    return "BAD-missing", None


def duplicate(root: Path, outside: Path) -> Built:
    path = modality_file(case(root, "BAD-duplicate"), "BAD-duplicate", "t1c", ".nii")
    nib.save(nib.Nifti1Image(image()[1], LPS_AFFINE), path)
    return "BAD-duplicate", path.name


def short_nii(path: Path) -> None:
    nib.save(nib.Nifti1Image(image()[1], LPS_AFFINE), path)
    path.write_bytes(path.read_bytes()[:1000])


def empty_folder(root: Path, outside: Path) -> Built:
    (root / "EMPTY-case").mkdir()
    return "EMPTY-case", None


def label_map_only(root: Path, outside: Path) -> Built:
    (root / "SEGONLY").mkdir()
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.uint8), LPS_AFFINE), root / "SEGONLY" / "SEGONLY-seg.nii.gz")
    return "SEGONLY", None


def extra_files(root: Path, outside: Path) -> Built:
    folder = case(root, "GOOD-extra")
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.uint8), LPS_AFFINE), folder / "GOOD-extra-seg.nii.gz")
    nib.save(nib.Nifti1Image(image()[0], LPS_AFFINE), folder / "brain-mask.nii.gz")
    shutil.copy(folder / "GOOD-extra-t1c.nii.gz", folder / "GOOD-extra-t1c.nii.gz.bak")
    for name, text in (("notes.txt", "scanned twice"), (".DS_Store", "\x00\x01"), ("meta.json", "{}")):
        (folder / name).write_text(text)
    return "GOOD-extra", None


def nifti2(root: Path, outside: Path) -> Built:
    folder = root / "GOOD-nifti2"
    folder.mkdir()
    for channel, modality in enumerate(MODALITIES):
        nib.save(nib.Nifti2Image(image()[channel], LPS_AFFINE), modality_file(folder, "GOOD-nifti2", modality))
    return "GOOD-nifti2", None


def oblique() -> np.ndarray:
    angle = np.deg2rad(10)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0, 0], [np.sin(angle), np.cos(angle), 0, 0],
                         [0, 0, 1, 0], [0, 0, 0, 1]])
    return rotation @ LPS_AFFINE


def shifted() -> np.ndarray:
    affine = LPS_AFFINE.copy()
    affine[0, 3] += 5
    return affine


def with_value(value: float, dtype: type = np.float32) -> np.ndarray:
    data = image()[3].astype(dtype)
    data[12, 14, 10] = value
    return data


BUILDERS: dict[str, Callable[[Path, Path], Built | None]] = {
    "good-2023": lambda root, outside: good(root, "GOOD-2023"),
    "good-2021": lambda root, outside: good(root, "BraTS2021_00042", naming="brats2021"),
    "flat-uncompressed": flat,
    "nested-folders": nested,
    "extra-files": extra_files,
    "spaces-in-id": lambda root, outside: good(root, "Case With Spaces"),
    "non-ascii-id": lambda root, outside: good(root, "Fall-Ü-脳-001"),
    "non-utf8-name": lambda root, outside: good(root, os.fsdecode(b"Case-\xff-bytes")),
    "float64": lambda root, outside: good(root, "GOOD-float64", data=image().astype(np.float64)),
    "uint16": lambda root, outside: good(root, "GOOD-uint16", data=image().astype(np.uint16)),
    "negative-intensities": lambda root, outside: good(root, "GOOD-negative",
                                                       data=np.where(image() > 0, (image() - 100) / 20, 0)),
    "trailing-singleton-axis": lambda root, outside: good(root, "GOOD-singleton", data=image()[..., None]),
    "nifti2": nifti2,
    "oblique-affine": lambda root, outside: good(root, "GOOD-oblique", affine=oblique()),
    "missing-modality": missing,
    "duplicate-modality": duplicate,
    "shape-mismatch": lambda root, outside: swap(root, "BAD-shape", "t2w", image()[2][:, :, :-1]),
    "affine-mismatch": lambda root, outside: swap(root, "BAD-affine", "t2w", image()[2], shifted()),
    "four-d": lambda root, outside: swap(root, "BAD-4d", "t1n", np.stack([image()[0]] * 3, axis=-1)),
    "two-d": lambda root, outside: swap(root, "BAD-2d", "t1n", image()[0][:, :, 10]),
    "nan": lambda root, outside: swap(root, "BAD-nan", "t2f", with_value(np.nan)),
    "inf": lambda root, outside: swap(root, "BAD-inf", "t2f", with_value(np.inf)),
    "float64-overflow": lambda root, outside: swap(root, "BAD-overflow", "t2f", with_value(1e300, np.float64)),
    "all-zero": lambda root, outside: swap(root, "BAD-zero", "t2f", np.zeros(SHAPE, np.float32)),
    "constant": lambda root, outside: swap(root, "BAD-constant", "t2f", np.full(SHAPE, 5, np.float32)),
    "bool-datatype": lambda root, outside: rewrite(
        root, "BAD-bool", "t1n", lambda p: gzip_of(p, (image()[0] > 0).astype(np.uint8),
                                                    lambda plain: with_header(plain, datatype=1))),
    "complex": lambda root, outside: swap(root, "BAD-complex", "t1n", image()[0].astype(np.complex64)),
    "rgb": lambda root, outside: rewrite(root, "BAD-rgb", "t1n", rgb),
    "truncated-gzip": lambda root, outside: rewrite(root, "BAD-truncated", "t1c", truncated),
    "corrupt-gzip": lambda root, outside: rewrite(root, "BAD-corrupt", "t1c", corrupted),
    "zero-byte": lambda root, outside: rewrite(root, "BAD-empty", "t1c", lambda p: p.write_bytes(b"")),
    "not-a-nifti": lambda root, outside: rewrite(root, "BAD-text", "t1c", lambda p: p.write_text("patient notes")),
    "truncated-nii": lambda root, outside: rewrite(root, "BAD-short", "t1c", short_nii, ".nii"),
    "huge-header": lambda root, outside: rewrite(root, "BAD-huge", "t1c", lambda p: gzip_of(
        p, image()[1], lambda plain: with_header(plain, shape=(30000, 30000, 30000)))),
    "singular-affine": lambda root, outside: rewrite(root, "BAD-singular", "t1c", singular),
    "unreadable-file": unreadable,
    "link-outside": lambda root, outside: linked(root, "BAD-link-out", outside / "secret-t2f.nii.gz"),
    "broken-link": lambda root, outside: linked(root, "BAD-link-broken", root / "nothing-here.nii.gz"),
    "fifo": lambda root, outside: rewrite(root, "BAD-fifo", "t2f", os.mkfifo),
    "folder-named-like-a-file": lambda root, outside: rewrite(root, "BAD-folder", "t2f", Path.mkdir),
    "dotdot-id": lambda root, outside: odd_id(root, "..", "dotdot"),
    "control-char-id": lambda root, outside: odd_id(root, "Line\nBreak", "control"),
    "backslash-id": lambda root, outside: odd_id(root, "back\\slash", "backslash"),
    "empty-folder": empty_folder,
    "label-map-only": label_map_only,
}


def test_doc_rows_and_builders_match():
    assert len(CASE_KINDS) >= 25 and set(CASE_KINDS) == set(BUILDERS)
    assert {outcome for outcome, _ in CASE_KINDS.values()} == {"segmented", "failed", "ignored"}
    assert all(words for outcome, words in CASE_KINDS.values() if outcome == "failed")


# --- the batch ---------------------------------------------------------------------------------------------------

def htcnns_command(inputs: Path, output: Path, models: Path) -> list[str]:
    return [sys.executable, "-m", "htcnns.cli", "segment", "-i", str(inputs), "-o", str(output), "--models",
            str(models), "--device", "cpu"]


def snapshot(folder: Path, skip: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``folder`` but ``skip`` -> (size, mtime ns), without following links."""
    result = {}
    for path in sorted(folder.rglob("*")):
        if path != skip and skip not in path.parents:
            info = path.lstat()
            result[os.fsencode(path).hex()] = (info.st_size, info.st_mtime_ns)
    return result


@dataclass(frozen=True)
class Batch:
    built: dict[str, Built | None]
    inputs: Path
    output: Path
    result: subprocess.CompletedProcess
    report: dict
    unchanged_outside_output: bool
    tmpdir_left: list[str]


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory, tiny_models: Path) -> Batch:
    root = tmp_path_factory.mktemp("badinput")
    inputs, outside, output, scratch = (root / name for name in ("in", "outside", "out", "tmp"))
    for folder in (inputs, outside, scratch):
        folder.mkdir()
    write_case(outside, "secret", image())
    built = {kind: builder(inputs, outside) for kind, builder in BUILDERS.items()}
    before = snapshot(root, output)
    env = os.environ | {"TMPDIR": str(scratch)}
    result = subprocess.run(htcnns_command(inputs, output, tiny_models), capture_output=True, text=True,
                            errors="replace", env=env, timeout=900)
    report = json.loads((output / "htcnns-report.json").read_text())
    return Batch(built, inputs, output, result, report, snapshot(root, output) == before,
                 [p.name for p in scratch.iterdir()])


def test_batch_finishes_with_no_traceback_no_stray_and_no_partial_file(batch: Batch):
    assert batch.result.returncode == 1, batch.result.stderr
    assert "Traceback" not in batch.result.stderr
    assert batch.report["state"] == "finished"
    assert batch.unchanged_outside_output and batch.tmpdir_left == []
    segmented = {batch.built[kind][0] for kind, (outcome, _) in CASE_KINDS.items() if outcome == "segmented"}
    expected = {os.fsencode(f"{case_id}.nii.gz") for case_id in segmented} | {b"htcnns-report.json", b"qc"}
    assert {os.fsencode(p.name) for p in batch.output.iterdir()} == expected  # no partial or stray file
    page = {p.name for p in (batch.output / "qc").iterdir()}
    assert {"index.html", "cases.csv"} <= page and not [name for name in page if name.startswith(".")]
    tried = sum(built is not None for built in batch.built.values())
    print(f"\nbad-input batch: {tried} kinds tried, {len(segmented)} good cases written, "
          f"{sum(c['status'] == 'failed' for c in batch.report['cases'])} refused with a sentence, "
          f"0 files lost, 0 partial files")


@pytest.mark.parametrize("kind", list(CASE_KINDS))
def test_kind_gets_its_documented_outcome(batch: Batch, kind: str):
    if batch.built[kind] is None:
        pytest.skip("running as root, which reads a file whatever its permission bits")
    case_id, culprit = batch.built[kind]
    outcome, words = CASE_KINDS[kind]
    entries = {entry["case_id"]: entry for entry in batch.report["cases"]}
    if outcome == "ignored":
        assert not any(case_id in entry_id for entry_id in entries)
        return
    entry = entries[case_id]
    if outcome == "segmented":
        assert entry["status"] == "ok" and entry["error"] == "", entry
        [found] = [c for c in find_cases(batch.inputs) if c.case_id == case_id]
        assert output_problem(batch.output / f"{case_id}.nii.gz", found.paths, {0, 1, 2, 3}) == ""
        return
    error = entry["error"]
    assert entry["status"] == "failed" and entry["output"] is None
    assert error.startswith(f"{display_id(case_id)}: ") and words in error and "\n" not in error, error
    assert culprit is None or culprit in error, error
    assert f"ERROR {error}" in batch.result.stderr.splitlines()


# --- run-level kinds ---------------------------------------------------------------------------------------------

def one_good_case(folder: Path) -> Path:
    write_case(folder / "GOOD-1", "GOOD-1", image())
    return folder


def in_mount_namespace() -> list[str] | None:
    for prefix in (["unshare", "-m"], ["unshare", "-rm"]):
        if shutil.which("unshare") and subprocess.run([*prefix, "true"], capture_output=True).returncode == 0:
            return prefix
    return None


def test_run_kinds_are_all_tested():
    assert set(RUN_KINDS) == {"output-not-writable", "output-is-a-file", "disk-full"}


def test_output_not_writable(tmp_path: Path, tiny_models: Path):
    inputs, output = one_good_case(tmp_path / "in"), tmp_path / "out"
    output.mkdir()
    command = shlex.join(htcnns_command(inputs, output, tiny_models))
    if os.getuid() != 0:
        output.chmod(0o555)
        result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=300)
    else:
        prefix = in_mount_namespace()
        if prefix is None:
            pytest.skip("running as root (permission bits ignored) and unshare -m does not work here")
        quoted = shlex.quote(str(output))
        script = f"mount --bind {quoted} {quoted} && mount -o remount,ro,bind {quoted} {quoted} && {command}"
        result = subprocess.run([*prefix, "bash", "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"ERROR output folder {output} ")
    assert RUN_KINDS["output-not-writable"][1] in result.stderr and "Traceback" not in result.stderr
    assert list(output.iterdir()) == []


def test_output_is_a_file(tmp_path: Path, tiny_models: Path):
    output = tmp_path / "out"
    output.write_text("not a folder")
    result = subprocess.run(htcnns_command(one_good_case(tmp_path / "in"), output, tiny_models),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and RUN_KINDS["output-is-a-file"][1] in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and output.read_text() == "not a folder"


def test_disk_full_fails_cases_cleanly_and_the_rerun_completes(tmp_path: Path, tiny_models: Path):
    prefix = in_mount_namespace()
    if prefix is None:
        pytest.skip("unshare -m does not work here, so no small tmpfs can be mounted to fill up")
    inputs = tmp_path / "in"
    for case_id in ("FULL-1", "FULL-2"):
        write_case(inputs / case_id, case_id, image())
    output, logs, kept = tmp_path / "out", tmp_path / "logs", tmp_path / "kept"
    for folder in (output, logs, kept):
        folder.mkdir()
    command, q = shlex.join([*htcnns_command(inputs, output, tiny_models), "--no-qc"]), shlex.quote
    script = "\n".join([
        f"mount -t tmpfs -o size=256k tmpfs {q(str(output))} || exit 99",
        f"dd if=/dev/zero of={q(str(output / 'filler'))} bs=4k 2>/dev/null",
        f"{command} 2> {q(str(logs / 'full.log'))}; echo $? > {q(str(logs / 'full.code'))}",
        f"ls -A {q(str(output))} > {q(str(logs / 'full.list'))}",
        f"rm {q(str(output / 'filler'))}",
        f"{command} 2> {q(str(logs / 'rerun.log'))}; echo $? > {q(str(logs / 'rerun.code'))}",
        f"cp {q(str(output))}/* {q(str(kept))}/",
    ])
    subprocess.run([*prefix, "bash", "-c", script], capture_output=True, text=True, timeout=600)
    full_log = (logs / "full.log").read_text()
    assert (logs / "full.code").read_text().strip() == "1", full_log
    assert (logs / "full.list").read_text().split() == ["filler"]  # no output, no report, no temporary file
    for case_id in ("FULL-1", "FULL-2"):
        assert f"ERROR {case_id}: cannot write {output / case_id}.nii.gz: No space left on device" in full_log
    assert "Traceback" not in full_log
    assert (logs / "rerun.code").read_text().strip() == "0", (logs / "rerun.log").read_text()
    assert sorted(p.name for p in kept.iterdir()) == ["FULL-1.nii.gz", "FULL-2.nii.gz", "htcnns-report.json"]
