"""HT-CNNs: brain-tumour segmentation of multi-parametric MRI with a STAPLE ensemble of three networks.

Three rooms: ``htcnns.inference`` (the stages of ``htcnns segment``), ``htcnns.training`` (``htcnns train`` and
``export``, and every training data source) and ``htcnns.evaluation`` (metrics, ``htcnns evaluate``); shared by
all three: ``networks``, ``weights`` (safetensors + manifests), ``labels`` and ``errors``; ``cli`` and ``api`` are
thin fronts.

``from htcnns import Segmenter`` is the Python API (``htcnns.api``); it is imported on first use, so that
``import htcnns`` stays light.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["SegmentationResult", "Segmenter", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("Segmenter", "SegmentationResult"):
        from htcnns import api

        return getattr(api, name)
    raise AttributeError(f"module 'htcnns' has no attribute {name!r}")
