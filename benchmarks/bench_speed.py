"""``make bench`` (speed): per-stage seconds of ``htcnns segment`` on a real case, and folder throughput.

1. Segments the real case BraTS-GLI-00001-000 once (a fresh ``htcnns segment`` process, as a user runs it) and
   prints each stage's seconds from its report, the share outside the networks and the device.
2. Segments a folder of real cases (the labelled and unlabelled BraTS cases of ``../shared/data``, up to
   ``--cases``) twice: one ``htcnns segment`` process per case, one after another, then one process for the
   whole folder (which loads the next case while the networks run); prints both wall times and their ratio.

Both use the same models and backend, on this machine as it is: run it on a quiet machine.

    python benchmarks/bench_speed.py [--backend torch|onnxruntime] [--models DIR] [--cases 6]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
REAL_CASE = SHARED_DATA / "brats2023-gli-00001-000"
FOLDER_SOURCES = ("brats-real-labelled", "brats-real-unlabelled", "brats2023-gli-00001-000", "brats2023-met-00110-000")
MODALITY_ENDINGS = ("-t1n", "-t1c", "-t2w", "-t2f", "_t1", "_t1ce", "_t2", "_flair")
NETWORKS = ("unet", "transbts", "axial_unet")


def image_files(folder: Path) -> list[Path]:
    """The four modality files of a case folder (label maps and READMEs left out)."""
    return sorted(p for p in folder.glob("*.nii.gz") if p.name[: -len(".nii.gz")].endswith(MODALITY_ENDINGS))


def copy_case(case: Path, into: Path) -> None:
    """``into/<case>/`` holding copies of the case's four images (segment refuses links out of its input)."""
    target = into / case.name
    target.mkdir(parents=True)
    for path in image_files(case):
        shutil.copy(path, target)


def real_cases(limit: int) -> list[Path]:
    """Up to ``limit`` real case folders of the shared data, in a fixed order."""
    found = []
    for source in FOLDER_SOURCES:
        root = SHARED_DATA / source
        folders = [root] if image_files(root) else sorted(p for p in root.glob("*") if p.is_dir())
        found += [f for f in folders if len(image_files(f)) == 4]
    return found[:limit]


def segment(inputs: Path, output: Path, options: list[str]) -> tuple[float, dict]:
    """Wall seconds of one ``htcnns segment`` process over ``inputs``, and its report."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "htcnns.cli", "segment", "-i", str(inputs), "-o", str(output),
                    "--overwrite", *options], check=True, capture_output=True)
    return time.perf_counter() - start, json.loads((output / "htcnns-report.json").read_text())


def stage_table(report: dict) -> str:
    """Per-stage seconds of the report's first case, the share outside the networks, the device and backend."""
    case = report["cases"][0]
    stages = case["stages"]
    total = sum(stages.values())
    outside = total - sum(stages.get(name, 0.0) for name in NETWORKS)
    qc = stages.get("qc", 0.0)
    lines = [f"{name:<12} {seconds:7.2f} s" for name, seconds in stages.items()]
    lines += [f"{'sum':<12} {total:7.2f} s  (case {case['seconds']:.2f} s; device {case['device']}, "
              f"backend {report['backend']})",
              f"outside the networks: {100 * outside / total:.1f} % ({100 * (outside - qc) / (total - qc):.1f} % "
              "without the QC picture)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["torch", "onnxruntime"], default="torch")
    parser.add_argument("--models", type=Path, default=None, help="folder of model folders (default: bundled)")
    parser.add_argument("--cases", type=int, default=6, help="cases in the folder-throughput run (default: 6)")
    parser.add_argument("--keep", type=Path, default=None, help="write the folder run's outputs (and QC page) here")
    args = parser.parse_args(argv)
    if not (REAL_CASE / "BraTS-GLI-00001-000-t1c.nii.gz").is_file():
        print(f"skipped: the real case is not at {REAL_CASE}")
        return 0
    options = ["--backend", args.backend, *(["--models", str(args.models)] if args.models else [])]
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        copy_case(REAL_CASE, work / "one")
        _, report = segment(work / "one", work / "one-out", options)
        print(f"per stage, real case BraTS-GLI-00001-000:\n{stage_table(report)}\n")
        cases = real_cases(args.cases)
        for case in cases:
            copy_case(case, work / "folder")
        separate = sum(segment(work / "folder" / c.name, work / "separate" / c.name, options)[0] for c in cases)
        together, _ = segment(work / "folder", args.keep or work / "together", options)
    print(f"folder of {len(cases)} real cases: one process per case {separate:.1f} s, one folder run "
          f"{together:.1f} s ({separate / together:.2f}x; {together / len(cases):.1f} s per case)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
