from pathlib import Path

import numpy as np

from htcnns.inference.overlay import save_overlay, tumour_centre


def test_tumour_centre_and_png(tmp_path: Path):
    labels = np.zeros((20, 22, 18), np.uint8)
    labels[10:14, 4:8, 2:6] = 2
    assert tumour_centre(labels) == (11, 5, 3)
    assert tumour_centre(np.zeros((4, 6, 8), np.uint8)) == (2, 3, 4)
    path = tmp_path / "pics" / "overlay.png"
    save_overlay(np.random.default_rng(0).random((20, 22, 18)), {"truth": labels, "prediction": labels}, path, "t")
    assert path.read_bytes()[:4] == b"\x89PNG"
