"""Split one batch over the jobs of a cluster's own scheduler, and merge their reports afterwards.

Shards are **0-based**: ``--shard i/N`` runs shard ``i`` of ``N`` with ``0 <= i < N`` (``0/4`` .. ``3/4``).
A case belongs to the shard given by the sha256 of its case id modulo N, never by its position in a listing, so
adding or removing other cases (or finding them in another order) never moves a case to another shard; the price
is that shards are only roughly equal in size (a few cases per shard can be uneven, and a shard may be empty).

From the environment (``shard_from_environment``):

- Slurm job arrays: ``SLURM_ARRAY_TASK_ID``, ``SLURM_ARRAY_TASK_COUNT``, and ``SLURM_ARRAY_TASK_MIN`` (and
  ``SLURM_ARRAY_TASK_STEP``) to make the index 0-based, so ``--array=1-8`` and ``--array=0-7`` both give 0/8..7/8.
  A sparse array (``--array=1,5,7``) is refused: use ``--array=0-(N-1)`` or pass ``--shard`` explicitly.
- Kubernetes Indexed Jobs: ``JOB_COMPLETION_INDEX`` (0-based, set by Kubernetes) with the count from
  ``HTCNNS_SHARD_COUNT``: Kubernetes does not export ``completions`` to the pod, so set it to the same number.

Each shard must write into its own output folder (``OUT/shard-i``): a run clears temporary files a killed run left
in its output folder, which would remove another shard's file in the middle of being written.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from htcnns.inference.batch_page import write_csv, write_index
from htcnns.inference.io import atomic_write, atomic_write_text
from htcnns.inference.report import FORMAT, Status

T = TypeVar("T")

COUNT_VARIABLE = "HTCNNS_SHARD_COUNT"
_SHARD = re.compile(r"\s*(-?\d+)\s*/\s*(-?\d+)\s*")
_RANK = {Status.OK.value: 3, Status.SKIPPED.value: 3, Status.FAILED.value: 2, Status.INTERRUPTED.value: 1,
         Status.PENDING.value: 0}
_STATE_ORDER = ("running", "interrupted", "finished")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (0-based) of ``count``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        """Refuse a count below 1 or an index outside 0..count-1."""
        if self.count < 1:
            raise ValueError(f"the number of shards must be at least 1, got {self.count}")
        if not 0 <= self.index < self.count:
            hint = f"; shards are 0-based, the last of {self.count} is {self.count - 1}/{self.count}" \
                if self.index == self.count else ""
            raise ValueError(f"shard index {self.index} is outside 0..{self.count - 1}{hint}")

    def __str__(self) -> str:
        """The ``i/N`` form."""
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``"i/N"`` (0-based, ``0 <= i < N``) as a Shard.

    Raises:
        ValueError: not two integers separated by "/", N < 1, or i outside 0..N-1 (the message says which).
    """
    match = _SHARD.fullmatch(text)
    if not match:
        raise ValueError(f"--shard must be I/N with 0 <= I < N (0-based), e.g. 0/4 for the first of 4; got {text!r}")
    return Shard(int(match[1]), int(match[2]))


def _integer(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not an integer") from None


def _slurm_shard(env: Mapping[str, str]) -> Shard:
    task, count = _integer(env, "SLURM_ARRAY_TASK_ID"), _integer(env, "SLURM_ARRAY_TASK_COUNT")
    low, step = _integer(env, "SLURM_ARRAY_TASK_MIN") or 0, _integer(env, "SLURM_ARRAY_TASK_STEP") or 1
    high = _integer(env, "SLURM_ARRAY_TASK_MAX")
    if count is None and high is not None:
        count = (high - low) // step + 1
    if count is None:
        raise ValueError("SLURM_ARRAY_TASK_ID is set but neither SLURM_ARRAY_TASK_COUNT nor SLURM_ARRAY_TASK_MAX; "
                         "pass --shard I/N explicitly")
    offset = task - low
    if offset % step or offset // step >= count or offset < 0:
        raise ValueError(f"Slurm array task {task} (min {low}, step {step}, count {count}) is not part of a "
                         "contiguous array; submit with --array=0-(N-1) or pass --shard I/N explicitly")
    return Shard(offset // step, count)


def shard_from_environment(env: Mapping[str, str] = os.environ) -> Shard | None:
    """The shard a Slurm array task or a Kubernetes Indexed Job pod should run, or None outside both.

    Slurm (``SLURM_ARRAY_TASK_ID``) is checked first, then Kubernetes (``JOB_COMPLETION_INDEX`` with the count in
    ``HTCNNS_SHARD_COUNT``); see the module doc.

    Raises:
        ValueError: the variables are present but inconsistent (not integers, index out of range, no count).
    """
    if _integer(env, "SLURM_ARRAY_TASK_ID") is not None:
        return _slurm_shard(env)
    index = _integer(env, "JOB_COMPLETION_INDEX")
    if index is None:
        return None
    count = _integer(env, COUNT_VARIABLE)
    if count is None:
        raise ValueError(f"JOB_COMPLETION_INDEX is set (a Kubernetes Indexed Job) but {COUNT_VARIABLE} is not; "
                         "set it to the Job's completions")
    return Shard(index, count)


def shard_of(case_id: str, count: int) -> int:
    """The 0-based shard of ``case_id`` among ``count``: the sha256 of its UTF-8 bytes modulo ``count``."""
    digest = hashlib.sha256(case_id.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % count


def in_shard(case_id: str, shard: Shard) -> bool:
    """True when ``case_id`` belongs to ``shard`` (depends on the id and the count only)."""
    return shard_of(case_id, shard.count) == shard.index


def select_shard(cases: Iterable[T], shard: Shard | None) -> list[T]:
    """The cases (``Case`` objects, or anything with ``case_id``, or plain ids) of ``shard``, order kept.

    None selects every case.
    """
    cases = list(cases)
    if shard is None:
        return cases
    return [case for case in cases if in_shard(getattr(case, "case_id", case), shard)]


def _read_report(path: Path) -> dict[str, Any]:
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read the report {path}: {error}") from error
    if not isinstance(report, dict) or report.get("format") != FORMAT or not isinstance(report.get("cases"), list):
        raise ValueError(f"{path} is not an HT-CNNs report (format {FORMAT!r} with a list of cases)")
    return report


def _shard_text(report: Mapping[str, Any]) -> str | None:
    """The report's shard as "i/N": a top-level "shard" or settings.shard, as "i/N" or {"index", "count"}."""
    value = report.get("shard") or (report.get("settings") or {}).get("shard")
    if isinstance(value, Mapping):
        value = f"{value.get('index')}/{value.get('count')}"
    return str(value) if value else None


def _better(new: Mapping[str, Any], new_time: str, old: Mapping[str, Any], old_time: str) -> bool:
    """Whether ``new`` replaces ``old``: a better status wins (ok/skipped > failed > interrupted > pending),
    and between equal ones the report updated last."""
    new_rank, old_rank = _RANK.get(new.get("status"), -1), _RANK.get(old.get("status"), -1)
    return new_rank > old_rank or (new_rank == old_rank and new_time > old_time)


def _compared(report: Mapping[str, Any], key: str) -> Any:
    """A run-level field as compared between shards (settings without their shard)."""
    value = report.get(key)
    return {k: v for k, v in value.items() if k != "shard"} if key == "settings" and value else value


def _warnings(reports: Sequence[Mapping[str, Any]], paths: Sequence[Path]) -> list[str]:
    warnings = [f"{path} differs from {paths[0]} in {key}"
                for key in ("models", "versions", "settings")
                for path, report in zip(paths[1:], reports[1:], strict=True)
                if _compared(report, key) != _compared(reports[0], key)]
    shards = []
    for path, report in zip(paths, reports, strict=True):
        text = _shard_text(report)
        try:
            shards += [parse_shard(text)] if text else []
        except ValueError:
            warnings.append(f"{path} names an unreadable shard {text!r}")
    counts = sorted({shard.count for shard in shards})
    if len(counts) > 1:
        warnings.append(f"the reports come from different shard counts: {', '.join(map(str, counts))}")
    elif counts:
        missing = sorted(set(range(counts[0])) - {shard.index for shard in shards})
        if missing:
            warnings.append(f"no report for shard(s) {', '.join(f'{i}/{counts[0]}' for i in missing)}")
    return warnings


def merge_reports(paths: list[Path]) -> dict[str, Any]:
    """Join shard reports (each the format of one report) into one report of every case.

    Every case appears once. When a case is in several reports (a rerun, or shards of another count), the entry
    with the better outcome is kept: ok/skipped over failed over interrupted over pending; between equal outcomes
    the one from the report updated last. Dropped entries are listed under ``duplicates``. Each case gets a
    ``report`` key: the file it came from. Run-level fields come from the first report (without its shard),
    with ``started`` the earliest, ``updated`` now, ``state`` the least finished (running < interrupted <
    finished), the summary recounted, a ``shards`` list (report, shard, state, started, updated, output, device,
    summary of each), and ``warnings`` (models, versions or settings that differ; shard indices with no report).

    Raises:
        ValueError: no paths, or a file that cannot be read or is not an HT-CNNs report.
    """
    if not paths:
        raise ValueError("no reports to merge")
    reports = [_read_report(Path(path)) for path in paths]
    chosen: dict[str, tuple[dict[str, Any], str]] = {}
    duplicates = []
    for path, report in zip(paths, reports, strict=True):
        for case in report["cases"]:
            entry, updated = {**case, "report": str(path)}, str(report.get("updated", ""))
            previous = chosen.get(case.get("case_id"))
            if previous is not None:
                keep_new = _better(entry, updated, *previous)
                kept, dropped = (entry, previous[0]) if keep_new else (previous[0], entry)
                duplicates.append({"case_id": case.get("case_id"), "kept": kept["report"],
                                   "kept_status": kept.get("status"), "dropped": dropped["report"],
                                   "dropped_status": dropped.get("status")})
                if not keep_new:
                    continue
            chosen[case.get("case_id")] = (entry, updated)
    cases = sorted((entry for entry, _ in chosen.values()), key=lambda c: str(c.get("case_id")))
    counts = Counter(case.get("status") for case in cases)
    states = [report.get("state") for report in reports]
    run = {key: value for key, value in reports[0].items() if key != "shard"}
    if isinstance(run.get("settings"), Mapping):
        run["settings"] = {key: value for key, value in run["settings"].items() if key != "shard"}
    return {**run, "state": min(states, key=lambda s: _STATE_ORDER.index(s) if s in _STATE_ORDER else -1),
            "started": min((str(r["started"]) for r in reports if r.get("started")), default=None),
            "updated": datetime.now(UTC).isoformat(timespec="seconds"),
            "summary": {status.value: counts[status.value] for status in Status},
            "shards": [{"report": str(path), "shard": _shard_text(report),
                        **{key: report.get(key) for key in ("state", "started", "updated", "output", "device",
                                                            "summary")}}
                       for path, report in zip(paths, reports, strict=True)],
            "warnings": _warnings(reports, [Path(p) for p in paths]), "duplicates": duplicates, "cases": cases}


def shard_qc_dirs(report_path: Path, report: Mapping[str, Any]) -> list[Path]:
    """Where a shard's QC pictures may be: its report's ``qc_dir`` (relative to the report's folder, or absolute,
    or that name beside the report when the absolute path was inside a container), then ``<report folder>/qc``."""
    folder = report_path.parent
    candidates = []
    if report.get("qc_dir"):
        named = Path(str(report["qc_dir"]))
        candidates += [named, folder / named.name] if named.is_absolute() else [folder / named]
    return [*candidates, folder / "qc"]


def _copy_pictures(merged: Mapping[str, Any], qc_dir: Path) -> None:
    """Copy each case's QC picture and thumbnail from its shard's QC folder into ``qc_dir`` (when found)."""
    reports: dict[str, dict[str, Any]] = {}
    for case in merged["cases"]:
        source = Path(case["report"])
        report = reports.setdefault(case["report"], _read_report(source))
        for key in ("qc_picture", "qc_thumbnail"):
            name = case.get(key)
            if not name or "/" in name or "\\" in name or name.startswith("."):
                continue
            found = next((d / name for d in shard_qc_dirs(source, report) if (d / name).is_file()), None)
            if found is not None and found.resolve() != (qc_dir / name).resolve():
                atomic_write(qc_dir / name, lambda temporary, f=found: shutil.copyfile(f, temporary), ".part")


def write_merged(paths: list[Path], output: Path, qc_dir: Path | None = None) -> dict[str, Any]:
    """Merge the reports (``merge_reports``) and write the result to ``output`` atomically.

    With ``qc_dir``, the cases' QC pictures are copied there from the shards' QC folders (``shard_qc_dirs``) and
    ``index.html`` and ``cases.csv`` are written there (batch_page).

    Returns:
        The merged report.
    """
    merged = merge_reports(paths)
    atomic_write_text(output, json.dumps(merged, indent=2) + "\n")
    if qc_dir is not None:
        _copy_pictures(merged, qc_dir)
        write_index(merged, qc_dir)
        write_csv(merged, qc_dir)
    return merged
