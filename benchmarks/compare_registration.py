"""Atlas registration, SimpleITK against ANTsPy, on simulated native scans (issue 14).

For each BraTS-space case: the native scans of ``benchmarks/native_scans.py`` (the same simulation, seed + i for the
i-th case given); the native T1c, skull on, registered to the SRI24 head by ``register_to_atlas`` (SimpleITK) and by
``ants.registration`` with each ``--ants`` type of transform, every registration on one thread. Printed: per case and
method the error against the true transform over the brain (mm, mean as ``registration_error_mm`` and max) and the
seconds of the registration alone, as a markdown table.

ANTsPy runs in a subprocess of ``--ants-python``, an interpreter with antspyx (the project does not need it):

    python benchmarks/compare_registration.py CASE... --ants-python ../ants-venv/bin/python [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from htcnns.evaluation.native_sim import NativeSimulation, brats_space_images, registration_error_mm, simulate_native
from htcnns.inference.prepare import REGISTRATION_SEED, Atlas, load_atlas, register_to_atlas

ONE_THREAD = {"ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "1", "OMP_NUM_THREADS": "1",
              "ANTS_RANDOM_SEED": str(REGISTRATION_SEED)}
ANTS_MISSING = ("antspyx is not importable by {python}: python -m venv ants-venv && ants-venv/bin/pip install "
                "antspyx==0.6.3, then pass --ants-python ants-venv/bin/python")
#: Run by ``--ants-python``: argv fixed, moving, output prefix, type of transform; prints seconds and the .mat file
#: (the forward transform maps fixed points to moving points, as resampling the moving image needs).
ANTS_WORKER = """
import json, sys, time
import ants
fixed, moving, prefix, kind = sys.argv[1:]
fixed, moving = ants.image_read(fixed), ants.image_read(moving)
start = time.perf_counter()
result = ants.registration(fixed, moving, type_of_transform=kind, outprefix=prefix)
seconds = time.perf_counter() - start
(transform,) = result["fwdtransforms"]
print(json.dumps({"seconds": seconds, "transform": transform}))
"""


def ants_missing(python: str) -> bool:
    """Whether ``python`` cannot import ants."""
    return subprocess.run([python, "-c", "import ants"], capture_output=True).returncode != 0


def register_ants(python: str, head: Path, t1c: Path, work: Path, kind: str) -> tuple[sitk.Transform, float]:
    """ANTsPy's atlas -> T1c transform (SRI24 head fixed, T1c moving) and its registration seconds."""
    work.mkdir()  # ants globs its output prefix for the transforms it wrote: one fresh folder per registration
    run = subprocess.run([python, "-c", ANTS_WORKER, str(head), str(t1c), str(work / "reg_"), kind], check=True,
                         capture_output=True, text=True, env={**os.environ, **ONE_THREAD})
    result = json.loads(run.stdout.strip().splitlines()[-1])
    return sitk.ReadTransform(result["transform"]), result["seconds"]


def register_simpleitk(atlas: Atlas, t1c: sitk.Image) -> tuple[sitk.Transform, float]:
    """Our atlas -> T1c transform and its seconds."""
    start = time.perf_counter()
    transform = register_to_atlas(atlas, t1c)
    return transform, time.perf_counter() - start


def errors_mm(atlas_to_native: sitk.Transform, truth: NativeSimulation, brain: sitk.Image,
              step: int = 4) -> dict[str, float]:
    """Mean and max distance (mm) between the estimated and the true native T1c position of every ``step``-th brain
    voxel per axis, sampled as ``registration_error_mm`` (whose mean it checks)."""
    inverse = truth.native_to_brats.GetInverse()
    z, y, x = (axis * step for axis in np.nonzero(sitk.GetArrayViewFromImage(brain)[::step, ::step, ::step] > 0))
    errors = []
    for index in zip(x.tolist(), y.tolist(), z.tolist(), strict=True):
        point = brain.TransformIndexToPhysicalPoint(index)
        estimate = atlas_to_native.TransformPoint(truth.brats_to_atlas.TransformPoint(point))
        errors.append(np.linalg.norm(np.subtract(estimate, inverse.TransformPoint(point))))
    distances = np.array(errors)
    if not np.isclose(distances.mean(), registration_error_mm(atlas_to_native, truth, brain, step)):
        raise AssertionError("errors_mm no longer samples as registration_error_mm")
    return {"mean_mm": float(distances.mean()), "max_mm": float(distances.max())}


def measure(folder: Path, seed: int, python: str, kinds: list[str]) -> dict[str, dict[str, float]]:
    """Method -> error (mean, max mm) and seconds on the simulated native T1c of one case."""
    atlas = load_atlas()
    head = atlas.head
    images = brats_space_images(folder, head)
    truth, brain = simulate_native(images, head, atlas.brain, seed), images["t1c"] != 0
    results = {}
    transform, seconds = register_simpleitk(atlas, truth.images["t1c"])
    results["SimpleITK"] = {**errors_mm(transform, truth, brain), "seconds": seconds}
    with tempfile.TemporaryDirectory() as work:
        head_path, t1c_path = Path(work) / "head.nrrd", Path(work) / "t1c.nrrd"
        sitk.WriteImage(head, str(head_path))
        sitk.WriteImage(truth.images["t1c"], str(t1c_path))
        for i, kind in enumerate(kinds):
            transform, seconds = register_ants(python, head_path, t1c_path, Path(work) / str(i), kind)
            results[f"ANTs {kind}"] = {**errors_mm(transform, truth, brain), "seconds": seconds}
    return results


def table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """Markdown: one row per case and a mean row (mean of the means, max of the maxima, mean seconds)."""
    methods = list(next(iter(results.values())))
    lines = ["| case | " + " | ".join(f"{m}: error mean / max, time" for m in methods) + " |",
             "|---|" + "---|" * len(methods)]

    def cell(means: list[float], maxima: list[float], seconds: list[float]) -> str:
        return f"{np.mean(means):.2f} / {max(maxima):.2f} mm, {np.mean(seconds):.1f} s"

    for case, by_method in results.items():
        lines.append(f"| {case} | " + " | ".join(cell([r["mean_mm"]], [r["max_mm"]], [r["seconds"]])
                                                  for r in by_method.values()) + " |")
    columns = [[by_method[m] for by_method in results.values()] for m in methods]
    lines.append("| **mean** | " + " | ".join(cell(*([r[k] for r in rows] for k in ("mean_mm", "max_mm", "seconds")))
                                              for rows in columns) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", type=Path, nargs="+", help="BraTS-space case folders")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ants-python", default=sys.executable, help="an interpreter with antspyx (default: this)")
    parser.add_argument("--ants", nargs="+", default=["Affine", "antsRegistrationSyNQuick[a]"],
                        help="ants.registration types of transform")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    if ants_missing(args.ants_python):
        print(ANTS_MISSING.format(python=args.ants_python), file=sys.stderr)
        return 2
    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(1)
    results = {}
    for i, folder in enumerate(args.cases):
        results[folder.name] = measure(folder, args.seed + i, args.ants_python, args.ants)
        print(folder.name, json.dumps(results[folder.name]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
