"""``htcnns export``: turn finished training runs into the model folder that ``htcnns segment`` loads.

- One run (``--from RUN``): its verified weights and manifest, renamed after the output folder, with a fresh card.
- Several runs (e.g. the K folds of a cross-validation): the run with the best mean validation Dice (WT, TC, ET) is
  exported alone; with ``--ensemble`` they all go into one folder instead, one weights file per run
  (``fold<i>.safetensors``, or ``member<j>.safetensors`` for runs trained without folds), each listed with its sha256
  in the manifest, and ``segment`` averages their probabilities (``htcnns.weights``). The ensemble's ET threshold is
  the median of its members' (no validation case is held out from every member, so it is not tuned anew).

``--window EDGE`` sets the sliding-window edge the exported network runs at (e.g. chosen by out-of-fold Dice;
recorded in its provenance and card). ``--onnx`` also writes ``network.onnx`` made from the exported weights at that
window, for ``segment --backend onnxruntime`` (single networks only).

Only the frozen weights, ``manifest.json``, ``MODEL_CARD.md`` (and ``network.onnx``) are written; checkpoints and
curves stay in the runs.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from htcnns.errors import SettingsError, WeightsError
from htcnns.networks import size_divisor
from htcnns.training.card import model_card, validation_dice
from htcnns.weights import LoadedModel, Manifest, load_model, save_ensemble, save_model

log = logging.getLogger(__name__)


def mean_validation_dice(manifest: Manifest) -> float:
    """Mean of a run's recorded validation Dice over WT, TC and ET (-inf when it has none)."""
    dice = validation_dice(manifest.provenance)
    return float(np.mean(list(dice.values()))) if dice else float("-inf")


def load_runs(folders: Sequence[Path], output: Path) -> list[LoadedModel]:
    """Verify and load each run; all must be single networks of one architecture, config and ROI.

    Raises:
        WeightsError: a run is missing, corrupt, already an ensemble, or differs from the first.
        SettingsError: the output folder is one of the runs.
    """
    if output.resolve() in {folder.resolve() for folder in folders}:
        raise SettingsError(f"--output {output} is one of the --from runs; export into another folder")
    runs = [load_model(folder) for folder in folders]
    first = runs[0].manifest
    for run in runs:
        found = run.manifest
        if found.ensemble:
            raise WeightsError(f"{run.folder}: is already an ensemble; export from the training runs themselves")
        if (found.architecture, found.config, found.roi_size) != (first.architecture, first.config, first.roi_size):
            raise WeightsError(f"{run.folder}: is {found.architecture} {found.config} ROI {found.roi_size}, but "
                               f"{runs[0].folder} is {first.architecture} {first.config} ROI {first.roi_size}; "
                               "export runs of one network only")
    return runs


def member_stems(runs: Sequence[LoadedModel]) -> list[str]:
    """``fold<i>`` for runs of a cross-validation fold, ``member<j>`` for the others; duplicates are refused."""
    stems = [f"fold{run.manifest.provenance['fold']['fold']}" if run.manifest.provenance.get("fold")
             else f"member{j}" for j, run in enumerate(runs)]
    if len(set(stems)) != len(stems):
        raise SettingsError(f"two runs hold the same fold ({', '.join(stems)}); pass each fold's run once")
    return stems


@dataclass(frozen=True)
class ExportOptions:
    """What ``htcnns export`` may change: the sliding-window edge (None keeps the run's) and whether to add ONNX."""

    window: int | None = None
    onnx: bool = False
    window_reason: str = ""


def exported_manifest(run: LoadedModel, output: Path, note: str, options: ExportOptions) -> Manifest:
    """The run's manifest renamed after ``output``, with ``exported_from`` and any window change in provenance."""
    provenance = run.manifest.provenance | {"exported_from": {"run": str(run.folder), "sha256": run.manifest.sha256,
                                                              "note": note, "command": _command()}}
    roi = run.manifest.roi_size
    if options.window and (options.window,) * 3 != roi:
        provenance["inference_roi_change"] = {"from": roi[0], "to": options.window,
                                              "reason": options.window_reason or "set by htcnns export --window"}
        roi = (options.window,) * 3
    return replace(run.manifest, name=output.name, provenance=provenance, roi_size=roi)


def export_single(run: LoadedModel, output: Path, note: str, options: ExportOptions = ExportOptions()) -> Manifest:
    """Write one run's network and manifest (``exported_manifest``), its card, and with ``options.onnx`` its ONNX
    file into ``output``."""
    manifest = save_model(run.network, exported_manifest(run, output, note, options), output, onnx=options.onnx)
    try:
        card = model_card(manifest)
    except KeyError:  # a manifest not written by htcnns train
        card = f"# Model card: {manifest.name} ({manifest.architecture})\n\nExported from `{run.folder}`.\n"
    (output / "MODEL_CARD.md").write_text(card + f"\nExported from `{run.folder}` by `htcnns export` ({note}).\n",
                                          encoding="utf-8")
    return manifest


def export_ensemble(runs: Sequence[LoadedModel], output: Path) -> Manifest:
    """Write all runs as one ensemble model folder (module docstring)."""
    stems, first = member_stems(runs), runs[0].manifest
    threshold = float(np.median([run.manifest.postprocessing.et_threshold for run in runs]))
    members = [{"weights_file": f"{stem}.safetensors", "run": str(run.folder), "sha256": run.manifest.sha256,
                "synthetic_validation_dice": validation_dice(run.manifest.provenance),
                "et_threshold": run.manifest.postprocessing.et_threshold, "provenance": run.manifest.provenance}
               for stem, run in zip(stems, runs, strict=True)]
    provenance = {"ensemble_of": members, "data": first.provenance.get("data", ""), "command": _command(),
                  "date": datetime.date.today().isoformat(),
                  "et_threshold": "median of the members' (none is tuned on the ensemble itself)"}
    draft = replace(first, name=output.name, postprocessing=replace(first.postprocessing, et_threshold=threshold),
                    provenance=provenance)
    manifest = save_ensemble({stem: run.network for stem, run in zip(stems, runs, strict=True)}, draft, output)
    (output / "MODEL_CARD.md").write_text(ensemble_card(manifest), encoding="utf-8")
    return manifest


def ensemble_card(manifest: Manifest) -> str:
    """A short card for an ensemble folder: what it is, and one row per member."""
    rows = "".join(f"| `{m['weights_file']}` | `{m['run']}` | {m['synthetic_validation_dice']} | {m['et_threshold']} "
                   f"| `{m['sha256'][:12]}…` |\n" for m in manifest.provenance["ensemble_of"])
    return f"""# Model card: {manifest.name} ({manifest.architecture} ensemble of {len(manifest.ensemble)})

**What it is.** {len(manifest.ensemble)} {manifest.architecture} networks trained by `htcnns train` (e.g. the folds
of a cross-validation); `segment` averages their sigmoid probabilities and post-processes the mean once, with ET
threshold {manifest.postprocessing.et_threshold} (the median of the members'). Sliding-window ROI {manifest.roi_size}.

Training data: {manifest.provenance["data"]}

| weights | run | validation Dice (its own validation cases) | ET threshold | sha256 |
|---|---|---|---|---|
{rows}
Exported by `{manifest.provenance["command"] or "htcnns export"}` on {manifest.provenance["date"]}; the digest of the
members' checksums (the manifest's `sha256`) is `{manifest.sha256}`.
"""


def export(folders: Sequence[Path], output: Path, ensemble: bool = False,
           options: ExportOptions = ExportOptions()) -> Manifest:
    """Export one run, the best of several, or (``ensemble``) all of them into the model folder ``output``.

    Raises:
        SettingsError: ``--window`` or ``--onnx`` with an ensemble, or a window the network cannot take.
    """
    runs = load_runs(folders, output)
    if ensemble and len(runs) > 1 and (options.window or options.onnx):
        raise SettingsError("--window and --onnx apply to single networks; export the ensemble without them")
    divisor = size_divisor(runs[0].manifest.architecture, runs[0].manifest.config)
    if options.window and options.window % divisor:
        raise SettingsError(f"--window {options.window}: must be a multiple of {divisor} for "
                            f"{runs[0].manifest.architecture}")
    if ensemble and len(runs) > 1:
        manifest = export_ensemble(runs, output)
    else:
        best = max(runs, key=lambda run: mean_validation_dice(run.manifest))
        scores = ", ".join(f"{run.folder}: {mean_validation_dice(run.manifest):.4f}" for run in runs)
        note = "the only run" if len(runs) == 1 else f"best mean validation Dice of {len(runs)} runs ({scores})"
        log.info("exporting %s (%s)", best.folder, note)
        manifest = export_single(best, output, note, options)
    remove_unlisted_weights(output, manifest)
    return manifest


def remove_unlisted_weights(folder: Path, manifest: Manifest) -> None:
    """Delete weights files an earlier export left in ``folder`` that ``manifest`` does not list."""
    listed = {member.weights_file for member in manifest.ensemble} or {"weights.safetensors"}
    for pattern in ("weights.safetensors", "fold*.safetensors", "member*.safetensors"):
        for path in folder.glob(pattern):
            if path.name not in listed:
                path.unlink()


def _command() -> str:
    """The ``htcnns export`` command of this process, or ""."""
    return "htcnns export " + shlex.join(sys.argv[2:]) if sys.argv[1:2] == ["export"] else ""


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``htcnns export``."""
    parser.add_argument("--from", dest="runs", type=Path, action="append", required=True, metavar="RUN_DIR",
                        help="folder written by htcnns train; repeat for several runs (e.g. the folds)")
    parser.add_argument("--output", type=Path, required=True, help="model folder to write (e.g. models/unet)")
    parser.add_argument("--ensemble", action="store_true",
                        help="keep all runs as one ensemble (probabilities averaged) instead of the best one")
    parser.add_argument("--window", type=int, default=None, metavar="EDGE",
                        help="sliding-window edge (voxels) the exported network runs at (default: the run's)")
    parser.add_argument("--window-reason", default="", metavar="TEXT",
                        help="why the window was changed (e.g. the out-of-fold Dice that chose it), for the card")
    parser.add_argument("--onnx", action="store_true",
                        help="also write network.onnx from the exported weights, for segment --backend onnxruntime")
    parser.set_defaults(run=run_export)


def run_export(args: argparse.Namespace) -> int:
    """CLI adapter: export and say what was written."""
    options = ExportOptions(args.window, args.onnx, args.window_reason)
    manifest = export(args.runs, args.output, args.ensemble, options)
    kind = f"ensemble of {len(manifest.ensemble)}" if manifest.ensemble else "single network"
    print(f"wrote {args.output}: {manifest.architecture}, {kind}, sha256 {manifest.sha256}")
    return 0
