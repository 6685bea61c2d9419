"""The model card (``MODEL_CARD.md``) of a trained model, and the one-line description of its training data."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict

from htcnns.training.synthseg import HELD_OUT
from htcnns.weights import Manifest

SYNTHSEG_LICENCES = ("SRI24 atlas: CC BY-SA 3.0 (Rohlfing et al. 2010); DeepMedic BraTS 2015 subset: "
                     "CC BY-NC-SA 3.0, non-commercial use only (Menze et al. 2015)")
SYNTHSEG2_LICENCES = (f"{SYNTHSEG_LICENCES}; SynthSeg label maps: Apache-2.0 (Billot et al. 2023); BraTS label maps: "
                      "BraTS data terms, research use (Menze et al. 2015, Bakas et al. 2017, Baid et al. 2021)")


def describe_data(data: str, first_seed: int, last_seed: int) -> str:
    """One line on the training data of a run (``data``: phantoms or synthseg), with licences where the data
    derive from third-party files."""
    if data == "synthseg2":
        return (f"SynthSeg-style synthetic cases from htcnns.training.synthseg.v2, seeds {first_seed}..{last_seed}: "
                "the 20 SynthSeg anatomies registered to SRI24, one random intensity per structure, tumour shapes from "
                "DeepMedic BraTS 2015 and BraTS label maps or procedural; no real image intensities. "
                f"Licences: {SYNTHSEG2_LICENCES}")
    if data == "synthseg":
        return (f"SynthSeg-style synthetic cases from htcnns.training.synthseg, seeds {first_seed}..{last_seed}: "
                "SRI24 atlas "
                f"anatomy, tumour shapes from DeepMedic BraTS 2015 expert label maps ({', '.join(HELD_OUT)} held out) "
                f"or procedural, random contrasts; no real image intensities. Licences: {SYNTHSEG_LICENCES}")
    return f"synthetic phantoms from htcnns.training.phantoms, seeds {first_seed}..{last_seed}; no real scans"


def data_paragraph(data: str) -> str:
    """The model card's paragraph on what the network was trained on."""
    if "real labelled cases" in data:
        return (f"**Trained on real labelled BraTS scans** ({data}). Research use only under the BraTS data terms; "
                "not validated for any clinical use.")
    if data.startswith("SynthSeg"):
        return (f"**Trained on synthetic images only** ({data}). It has never seen a real MRI intensity; the "
                "shapes of its tumours come from real expert label maps. Its weights derive from the SRI24 atlas "
                "(CC BY-SA 3.0) and the DeepMedic BraTS 2015 label maps (CC BY-NC-SA 3.0), and for v2 also the "
                "SynthSeg label maps (Apache-2.0) and BraTS label maps (BraTS data terms): non-commercial research "
                "use only. Do not use it for any clinical conclusion.")
    return (f"**Trained on synthetic phantoms only** ({data}). It has never seen a real MRI scan or a real\n"
            "tumour: it segments the project's phantoms and is a placeholder until weights trained on realistic "
            "data land.\nDo not use it for any clinical or research conclusion on real scans.")


def seeds_text(seeds: Sequence[int]) -> str:
    """``100000..100002`` for a run of consecutive seeds, else the seeds separated by commas."""
    seeds = list(seeds)
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}..{seeds[-1]}"
    return ", ".join(str(seed) for seed in seeds)


def model_card(manifest: Manifest) -> str:
    """A short human-readable card for a model folder trained by ``htcnns train``."""
    prov = manifest.provenance
    dice = ", ".join(f"{k} {v:.3f}" for k, v in validation_dice(prov).items()) or "not measured"
    return f"""# Model card: {manifest.name} ({manifest.architecture}, compact)

**What it is.** A compact {manifest.architecture} network of HT-CNNs, output channels WT, TC, ET (sigmoid),
input channels t1n, t1c, t2w, t2f (normalised `{manifest.normalization}`), sliding-window ROI {manifest.roi_size}.

{data_paragraph(prov["data"])}{_inherited_terms(prov)}

| item | value |
|---|---|
| command | `{prov["command"]}` |
| seed | {prov["seed"]} |
| steps | {prov["steps"]} (batch {prov["config"]["batch_size"]}, patch {prov["config"]["patch_size"]}^3) |
{_training_rows(prov)}| initialised from | {_parent_summary(prov.get("initialised_from") or {})} |
| wall time | {prov["wall_time_s"]} s on {prov["machine"]} |
| {_validation_title(prov)} | {dice} |
| date | {prov["date"]} |
| weights sha256 | `{manifest.sha256}` |
{_onnx_row(manifest)}
Post-processing: {json.dumps(asdict(manifest.postprocessing))}{_tuning_note(prov.get("et_threshold_tuning"))}.
{_roi_change_note(prov.get("inference_roi_change"))}"""


def _onnx_row(manifest: Manifest) -> str:
    """The card's row on the ONNX file made from the weights (``htcnns export --onnx``), or ""."""
    if manifest.onnx is None:
        return ""
    return (f"| ONNX (`--backend onnxruntime`) | `{manifest.onnx.file}`, sha256 `{manifest.onnx.sha256}`, made from "
            f"these weights at window {manifest.onnx.roi_size[0]}^3 |\n")


def _inherited_terms(prov: dict) -> str:
    """A sentence on the licences a fine-tuned network inherits from the data of the runs it started from."""
    chain, parent = [], prov.get("initialised_from") or {}
    while parent:
        chain.append(parent["provenance"].get("data", ""))
        parent = parent["provenance"].get("initialised_from") or {}
    if any("SynthSeg" in data or "DeepMedic" in data for data in chain):
        return (" It was initialised from networks trained on SynthSeg-style synthetic cases, whose terms it keeps: "
                f"{SYNTHSEG_LICENCES}.")
    return ""


def validation_dice(prov: dict) -> dict[str, float]:
    """A run's validation Dice per region (older manifests call it synthetic_validation_dice)."""
    return prov.get("validation_dice") or prov.get("synthetic_validation_dice") or {}


def _validation_title(prov: dict) -> str:
    """What the card's Dice row was measured on."""
    if "validation_cases" in prov and "synthetic_validation_dice" not in prov:
        held_out = ", ".join(prov["validation_cases"]) or "(none: every case trained)"
        return f"Dice on held-out real cases {held_out}"
    return f"Dice on held-out synthetic cases, seeds {seeds_text(prov['validation_seeds'])}"


def _training_rows(prov: dict) -> str:
    """Table rows for the training options newer runs record (none for older manifests)."""
    rows = []
    if "deep_supervision" in prov:
        rows.append(f"| deep supervision | {'yes' if prov['deep_supervision'] else 'no'} |")
    if prov.get("frozen_encoder"):
        rows.append(f"| frozen | encoder ({len(prov['frozen_encoder'])} parameter tensors) |")
    if prov.get("fold"):
        fold = prov["fold"]
        rows.append(f"| cross-validation | fold {fold['fold']} of {fold['folds']} (validation = this fold) |")
    return "".join(row + "\n" for row in rows)


def _tuning_note(tuning: dict | None) -> str:
    """Where the ET threshold came from, when it was tuned."""
    if not tuning:
        return ""
    table = ", ".join(f"{threshold}: {dice}" for threshold, dice in tuning["mean_et_dice"].items())
    return f"; ET threshold {tuning['chosen']} tuned on the validation cases (mean ET Dice per threshold: {table})"


def _roi_change_note(change: dict | None) -> str:
    """A paragraph on an inference ROI set after training, with the Dice measured at both sizes."""
    if not change:
        return ""
    if "synthetic_dice_after" not in change:
        return (f"\n**Inference ROI changed after training** from {change['from']}^3 to {change['to']}^3: "
                f"{change['reason']}.\n")
    return (f"\n**Inference ROI changed after training** from {change['from']}^3 to {change['to']}^3: "
            f"{change['reason']}. Dice on held-out phantoms {change['validation_seeds']} (synthetic): "
            f"{change['synthetic_dice_after']} at the new ROI, {change['synthetic_dice_before']} at the old.\n")


def _parent_summary(parent: dict) -> str:
    """One cell describing the model a training started from, chained back to the first run."""
    if not parent:
        return "random initialisation"
    earlier = parent["provenance"]
    return (f"`{parent['sha256'][:12]}…` after `{earlier.get('command', '?')}` ({earlier.get('wall_time_s', '?')} s), "
            f"itself from {_parent_summary(earlier.get('initialised_from') or {})}")
