"""How far a head may be turned in the scanner before the atlas registration loses it (its capture range).

One simulated real head (``htcnns.evaluation.native_heads``) is registered to the atlas as simulated, then turned
by its header alone (``tilted``: the same voxels) about each axis through the T1c's centre and registered again.
The untilted result turned by the same rotation is where a registration of the turned head should end; printed per
turn: the mean distance (mm) over the atlas brain between the two, and the seconds. ``--no-search`` measures the
registration without the orientation search (``ORIENTATION_STEPS = 0``). ``crop-top N``: the unturned T1c with its
head's top N mm cut off (a scan that misses the vertex), where the untilted result itself is expected.

    python benchmarks/orientation_capture.py ../shared/data/synthseg-label-maps/training_seg_06.nii.gz --seed 4
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from htcnns.evaluation.native_heads import simulate_head, tilted
from htcnns.evaluation.native_sim import mask_points
from htcnns.inference import prepare

AXES = {"pitch": (1.0, 0.0, 0.0), "roll": (0.0, 1.0, 0.0), "yaw": (0.0, 0.0, 1.0)}
"""LPS axes: pitch about left-right (+: chin towards the chest), roll about front-back, yaw about feet-head."""
TURNS = [("pitch", d) for d in (-40, -30, -20, 20, 30, 40)] + [("roll", -30), ("roll", 30), ("yaw", -30), ("yaw", 30)]
CROPS = [("crop-top", mm) for mm in (10, 20, 30)]


def crop_top(image: sitk.Image, mm: float) -> sitk.Image:
    """``image`` less its slices (along the grid axis closest to feet-head) above ``mm`` below the head's top."""
    direction = np.array(image.GetDirection()).reshape(3, 3)
    axis = int(np.argmax(np.abs(direction[2])))
    step = direction[2, axis] * image.GetSpacing()[axis]  # mm upwards per slice
    top_slice = (prepare.head_top(image)[2] - mm - image.GetOrigin()[2]) / step
    size, index = list(image.GetSize()), [0, 0, 0]
    if step > 0:
        size[axis] = int(top_slice) + 1
    else:
        index[axis] = int(np.ceil(top_slice))
        size[axis] -= index[axis]
    return sitk.RegionOfInterest(image, size, index)


def error_mm(found: sitk.Transform, expected: sitk.Transform, turn: sitk.Transform, points: np.ndarray) -> float:
    """Mean distance between ``found`` and ``turn`` after ``expected`` over ``points``."""
    return float(np.mean([np.linalg.norm(np.subtract(found.TransformPoint(p),
                                                     turn.TransformPoint(expected.TransformPoint(p))))
                          for p in points.tolist()]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("head", type=Path, help="a SynthSeg whole-head label map")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-search", action="store_true", help="without the orientation search")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    if args.no_search:
        prepare.ORIENTATION_STEPS = 0
    atlas = prepare.load_atlas()
    points = mask_points(atlas.brain)
    t1c = simulate_head(args.head, args.seed).images["t1c"]
    centre = prepare.grid_centre(t1c)
    expected = prepare.register_to_atlas(atlas, t1c)
    results = {}
    for name, degrees in TURNS + CROPS:
        start = time.perf_counter()
        if name == "crop-top":
            found, turn = prepare.register_to_atlas(atlas, crop_top(t1c, degrees)), sitk.Transform()
        else:
            found = prepare.register_to_atlas(atlas, tilted(t1c, AXES[name], degrees, centre))
            turn = sitk.VersorTransform(AXES[name], np.radians(degrees), centre.tolist())
        results[f"{name} {degrees:+d}"] = {"error_mm": error_mm(found, expected, turn, points),
                                           "seconds": time.perf_counter() - start}
        print(f"{name} {degrees:+d}", json.dumps({k: round(v, 2) for k, v in results[f"{name} {degrees:+d}"].items()}),
              flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
