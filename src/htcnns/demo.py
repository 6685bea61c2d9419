"""The demo: a synthetic BraTS-like phantom, segmented by the bundled models and scored against its truth."""

from __future__ import annotations

import time
from pathlib import Path

import nibabel as nib
import numpy as np

from htcnns.errors import HtcnnsError
from htcnns.inference.overlay import save_overlay
from htcnns.inference.pipeline import Settings, default_models_root, load_models, segment_folder
from htcnns.labels import REGIONS, region_dice
from htcnns.training.phantoms import make_phantom, write_phantom_case

DEMO_CASE_ID = "BraTS-DEMO-00000-000"


def run_demo_case(output_root: Path, *, device: str = "auto", seed: int = 2028) -> str:
    """Write the phantom under ``output_root/input``, segment it into ``output_root/output``, score it.

    Returns:
        A short report: Dice per region against the phantom's truth, timings and the output path.
    """
    input_dir, truth_path = output_root / "input", output_root / "truth" / f"{DEMO_CASE_ID}-seg.nii.gz"
    write_phantom_case(make_phantom(seed), input_dir / DEMO_CASE_ID, DEMO_CASE_ID, truth_path=truth_path)
    settings = Settings(device=device)
    models = load_models(default_models_root(), settings.device)
    start = time.perf_counter()
    [result] = segment_folder(input_dir, output_root / "output", models, settings)
    seconds = time.perf_counter() - start
    if not result.ok:
        raise HtcnnsError(f"the demo case could not be segmented: {result.error}")
    predicted, truth = (np.asarray(nib.as_closest_canonical(nib.load(p)).dataobj) for p in (result.output, truth_path))
    scores = region_dice(predicted, truth)
    flair = nib.as_closest_canonical(nib.load(input_dir / DEMO_CASE_ID / f"{DEMO_CASE_ID}-t2f.nii.gz")).get_fdata()
    overlay = output_root / "overlay.png"
    save_overlay(flair, {"truth": truth, "HT-CNNs": predicted}, overlay, f"{DEMO_CASE_ID} (synthetic), FLAIR")
    lines = [f"Demo case {DEMO_CASE_ID} (synthetic phantom, seed {seed}) segmented in {seconds:.1f} s "
             f"by {len(models)} models fused with STAPLE.",
             "Dice against the phantom's truth (synthetic data): "
             + ", ".join(f"{region} {scores[region]:.3f}" for region in REGIONS),
             f"Output: {result.output.resolve()}",
             f"Picture: {overlay.resolve()}"]
    return "\n".join(lines)
