"""``OUT/htcnns-report.json``: what a run did to each case, with the versions and weights it used.

The report is rewritten atomically after every case, so a run killed at any moment leaves a complete, valid
report: the cases finished so far with their outcome, the others ``pending``. Layout (``format`` 1)::

    {"format": "htcnns-report/1", "state": "running" | "finished" | "interrupted",
     "started": ISO time, "updated": ISO time, "input": path, "output": path,
     "versions": {"htcnns", "python", "torch", "cuda", "monai", "nibabel", "numpy"},
     "device": "cpu" or "cuda:0 (GPU name)", "backend": "torch" | "onnxruntime", "settings": {...},
     "models": [{"name", "architecture", "sha256"}], "summary": {status: count},
     "cases": [{"case_id", "status", "error", "seconds", "output", "note", "device",
                "stages": {"read", "validate", "preprocess", <each network>, "postprocess", "fuse", "write": s}}]}

OK cases also carry the review fields (``review``: ``needs_review``, ``review_reason``, ``review_score``,
...) and, with QC on, ``volumes_ml``, ``qc_picture`` and ``qc_thumbnail`` (``qc``). A case's ``seconds`` is
the wall time it held the networks; its ``read``/``validate``/``preprocess`` stages ran
before, in the background, while the previous case was being segmented.
"""

from __future__ import annotations

import json
import logging
import platform
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import monai
import nibabel
import numpy
import torch

from htcnns import __version__
from htcnns.errors import OutputError
from htcnns.inference.cases import display_id
from htcnns.inference.io import atomic_write_text
from htcnns.weights import LoadedModel

log = logging.getLogger(__name__)

REPORT_NAME = "htcnns-report.json"
FORMAT = "htcnns-report/1"


class Status(StrEnum):
    """Outcome of one case in the report."""

    OK = "ok"  # segmented and written by this run
    SKIPPED = "skipped"  # a valid output from an earlier run was kept; counts as success
    FAILED = "failed"  # ``error`` says why in one sentence
    PENDING = "pending"  # not reached (the run is still going, or was killed)
    INTERRUPTED = "interrupted"  # stopped by SIGTERM/SIGINT while running; nothing was written for it


@dataclass(frozen=True)
class CaseResult:
    """Outcome of one case: ``error`` is one sentence naming the case, empty unless FAILED/INTERRUPTED."""

    case_id: str
    status: Status
    error: str = ""
    seconds: float = 0.0
    output: Path | None = None
    note: str = ""
    stages: dict[str, float] = field(default_factory=dict)
    device: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the case has a valid output: written now or kept from an earlier run."""
        return self.status in (Status.OK, Status.SKIPPED)

    def to_json(self) -> dict[str, Any]:
        """The case's entry in the report (output as a file name inside OUT)."""
        return {"case_id": self.case_id, "status": self.status.value, "error": self.error,
                "seconds": round(self.seconds, 3), "output": self.output.name if self.output else None,
                "note": self.note, "device": self.device,
                "stages": {stage: round(seconds, 3) for stage, seconds in self.stages.items()}, **self.extra}


def versions() -> dict[str, str | None]:
    """Versions of the software that produced the outputs."""
    return {"htcnns": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "monai": monai.__version__, "nibabel": nibabel.__version__,
            "numpy": numpy.__version__}


def describe_device(device: torch.device) -> str:
    """``cpu``, or ``cuda:N (GPU name)``."""
    if device.type != "cuda":
        return str(device)
    return f"{device} ({torch.cuda.get_device_name(device)})"


def model_entries(models: Sequence[LoadedModel]) -> list[dict[str, str]]:
    """Each model's name, architecture and the sha256 of its weights (from its verified manifest)."""
    return [{"name": m.manifest.name, "architecture": m.manifest.architecture, "sha256": m.manifest.sha256}
            for m in models]


class Report:
    """The run report, kept up to date on disk; ``error`` holds the last write failure ("" once a write works)."""

    def __init__(self, path: Path | None, run: Mapping[str, Any], case_ids: Sequence[str]) -> None:
        """Start a report listing every case as pending.

        Args:
            path: where to write it; None keeps it in memory only.
            run: run-level fields (input, output, device, settings, models); versions and times are added.
        """
        self.path, self.error = path, ""
        now = _now()
        self.run = {"format": FORMAT, "state": "running", "started": now, "updated": now, **run,
                    "versions": versions()}
        self.cases = {case_id: CaseResult(case_id, Status.PENDING) for case_id in case_ids}
        self.write()

    def start(self, case_id: str) -> None:
        """Mark a case as in flight: if the run is stopped before ``record``, it is reported as interrupted."""
        self.cases[case_id] = CaseResult(case_id, Status.INTERRUPTED, f"{display_id(case_id)}: interrupted before "
                                         "its output was written")

    def record(self, result: CaseResult) -> None:
        """Store one case's outcome and rewrite the report."""
        self.cases[result.case_id] = result
        self.write()

    def close(self, state: str) -> None:
        """Mark the run ``finished`` or ``interrupted`` and rewrite the report."""
        self.run["state"] = state
        self.write()

    def to_json(self) -> dict[str, Any]:
        """The whole report as written."""
        summary = Counter(result.status.value for result in self.cases.values())
        return {**self.run, "updated": _now(), "summary": {status.value: summary[status.value] for status in Status},
                "cases": [result.to_json() for result in self.cases.values()]}

    def write(self) -> None:
        """Rewrite the report file atomically (nothing when ``path`` is None)."""
        if self.path is None:
            return
        try:
            atomic_write_text(self.path, json.dumps(self.to_json(), indent=2) + "\n")
        except OutputError as error:
            if not self.error:
                log.error("%s (the report; the run goes on)", error)
            self.error = str(error)
        else:
            self.error = ""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
