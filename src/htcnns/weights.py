"""Frozen weights: a safetensors file plus a JSON manifest, verified by sha256 before any tensor is read.

No pickle is ever loaded: tensors come only from safetensors files. An ensemble folder (``htcnns export --ensemble``)
holds one weights file per fold model instead, each listed with its sha256 under ``ensemble`` in the manifest; the
manifest's ``sha256`` is then a digest of that list, and the loaded network averages the members' probabilities
(``htcnns.networks.ensemble``). Manifests without ``ensemble`` read and load as before.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from htcnns.errors import WeightsError
from htcnns.inference.onnx_backend import ONNX_NAME, OnnxFile, OnnxNetwork, export_onnx
from htcnns.inference.postprocess import PostprocessParams
from htcnns.inference.preprocess import LEGACY_NORMALIZATION, NORMALIZATION
from htcnns.labels import MODALITIES, REGIONS
from htcnns.networks import ARCHITECTURES, build_network
from htcnns.networks.ensemble import EnsembleNetwork

MANIFEST_NAME = "manifest.json"
WEIGHTS_NAME = "weights.safetensors"
FORMAT_VERSION = 1
BACKENDS = ("torch", "onnxruntime")


@dataclass(frozen=True)
class EnsembleMember:
    """One fold model of an ensemble folder: its weights file (a plain name inside the folder) and its sha256."""

    weights_file: str
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """Everything needed to rebuild, verify and use one frozen network (``models/<name>/manifest.json``)."""

    name: str
    architecture: str
    config: dict[str, Any]
    roi_size: tuple[int, int, int]
    sha256: str
    postprocessing: PostprocessParams = field(default_factory=PostprocessParams)
    input_modalities: tuple[str, ...] = MODALITIES
    outputs: tuple[str, ...] = REGIONS
    provenance: dict[str, Any] = field(default_factory=dict)
    ensemble: tuple[EnsembleMember, ...] = ()
    onnx: OnnxFile | None = None
    normalization: str = NORMALIZATION

    def to_json(self) -> dict[str, Any]:
        """The manifest as written to disk (with the fixed label semantics spelled out)."""
        data = asdict(self)
        data["format_version"] = FORMAT_VERSION
        if self.onnx is None:
            del data["onnx"]
        if not self.ensemble:
            del data["ensemble"]
            data["weights_file"] = WEIGHTS_NAME
        data["output_activation"] = "sigmoid"
        data["labels"] = {"0": "background", "1": "NCR", "2": "ED", "3": "ET"}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], source: Path) -> Manifest:
        """Parse a manifest; unknown or missing keys are a WeightsError naming ``source``."""
        fields = {key: data[key] for key in cls.__dataclass_fields__ if key in data}
        try:
            fields["roi_size"] = tuple(fields["roi_size"])
            fields["postprocessing"] = PostprocessParams(**fields.get("postprocessing", {}))
            fields["input_modalities"] = tuple(fields.get("input_modalities", MODALITIES))
            fields["outputs"] = tuple(fields.get("outputs", REGIONS))
            fields["ensemble"] = tuple(EnsembleMember(**member) for member in fields.get("ensemble", ()))
            fields.setdefault("normalization", LEGACY_NORMALIZATION)  # manifests before the field existed
            if fields.get("onnx") is not None:
                fields["onnx"] = OnnxFile(**{**fields["onnx"], "roi_size": tuple(fields["onnx"]["roi_size"])})
            return cls(**fields)
        except (KeyError, TypeError) as error:
            raise WeightsError(f"{source}: manifest is incomplete or has unknown fields ({error})") from error


@dataclass(frozen=True)
class LoadedModel:
    """A verified network in eval mode on its device, with its manifest; ``runner`` is what maps windows to
    logits: the network itself (backend torch) or its verified ONNX file in ONNX Runtime (backend onnxruntime)."""

    manifest: Manifest
    network: torch.nn.Module
    folder: Path
    runner: Callable[[torch.Tensor], torch.Tensor] | None = None

    @property
    def device(self) -> torch.device:
        """Where the network's tensors (and the image it is given) live."""
        return next(self.network.parameters()).device

    @property
    def predictor(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """Windows (N, 4, *roi) -> logits (N, 3, *roi) with this model's backend."""
        return self.runner or self.network

    @property
    def backend(self) -> str:
        """``torch`` or ``onnxruntime``."""
        return "onnxruntime" if self.runner is not None else "torch"


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(folder: Path) -> Manifest:
    """Read ``folder/manifest.json``; a missing or malformed file is a WeightsError."""
    path = folder / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise WeightsError(f"{path}: cannot read the model manifest ({error})") from error
    return Manifest.from_json(data, path)


def load_model(folder: Path, device: torch.device | str = "cpu", backend: str = "torch") -> LoadedModel:
    """Verify and load one model folder; with backend ``onnxruntime`` also its ONNX file.

    Raises:
        WeightsError: the manifest is missing or malformed, a checksum differs, the architecture is unknown, the
            tensors do not fit the architecture, or (onnxruntime) the ONNX file is missing, altered or not made
            from these weights at this window size.
    """
    manifest = read_manifest(folder)
    _check_manifest(manifest, folder)
    if not manifest.ensemble:
        network = _load_network(manifest, folder / WEIGHTS_NAME, manifest.sha256)
    elif manifest.sha256 != ensemble_sha256(manifest.ensemble):
        raise WeightsError(f"{folder / MANIFEST_NAME}: sha256 is not the digest of its ensemble members' checksums; "
                           "the manifest was edited. Restore the model folder.")
    else:
        network = EnsembleNetwork([_load_network(manifest, _member_path(folder, member.weights_file), member.sha256)
                                   for member in manifest.ensemble])
    runner = onnx_runner(manifest, folder, torch.device(device)) if backend == "onnxruntime" else None
    return LoadedModel(manifest, network.to(device).eval(), folder, runner)


def onnx_runner(manifest: Manifest, folder: Path, device: torch.device) -> OnnxNetwork:
    """The model's ONNX file in ONNX Runtime, after checking that it belongs to these weights and this window."""
    entry = manifest.onnx
    if entry is None:
        raise WeightsError(f"{folder}: has no ONNX file; make one with `htcnns export --onnx` or use --backend torch.")
    if entry.weights_sha256 != manifest.sha256 or entry.roi_size != manifest.roi_size:
        raise WeightsError(f"{folder / entry.file}: was made from weights {entry.weights_sha256[:12]}… at window "
                           f"{entry.roi_size}, but the folder holds {manifest.sha256[:12]}… at {manifest.roi_size}; "
                           "re-export it with `htcnns export --onnx`.")
    path = folder / entry.file
    if Path(entry.file).name != entry.file or not path.is_file():
        raise WeightsError(f"{path}: ONNX file is missing; make it with `htcnns export --onnx` or use --backend torch.")
    actual = sha256_of(path)
    if actual != entry.sha256:
        raise WeightsError(f"{path}: sha256 is {actual} but {MANIFEST_NAME} expects {entry.sha256}; the file is "
                           "corrupt or was replaced. Refusing to use it: restore the model folder or re-export it.")
    return OnnxNetwork(path, entry.roi_size, device)


def _load_network(manifest: Manifest, weights: Path, expected_sha256: str) -> torch.nn.Module:
    """The manifest's network with the tensors of ``weights``, after checking the file's sha256."""
    if not weights.is_file():
        raise WeightsError(f"{weights}: weight file is missing; restore the model folder.")
    actual = sha256_of(weights)
    if actual != expected_sha256:
        raise WeightsError(
            f"{weights}: sha256 is {actual} but {MANIFEST_NAME} expects {expected_sha256}; the file is corrupt "
            "or was replaced. Refusing to use it: restore the model folder from the release."
        )
    network = build_network(manifest.architecture, manifest.config)
    try:
        network.load_state_dict(load_file(weights), strict=True)
    except RuntimeError as error:
        raise WeightsError(f"{weights}: tensors do not match architecture {manifest.architecture!r}: {error}") \
            from error
    return network


def _member_path(folder: Path, name: str) -> Path:
    """``folder/name`` for an ensemble member; a name that is not a plain file name is a WeightsError."""
    if not name.endswith(".safetensors") or Path(name).name != name:
        raise WeightsError(f"{folder / MANIFEST_NAME}: ensemble weights file {name!r} is not a plain "
                           "*.safetensors name in the model folder")
    return folder / name


def ensemble_sha256(members: Sequence[EnsembleMember]) -> str:
    """The digest an ensemble manifest records as its ``sha256``: sha256 of "<file> <sha256>" lines, in order."""
    text = "".join(f"{member.weights_file} {member.sha256}\n" for member in members)
    return hashlib.sha256(text.encode()).hexdigest()


def _check_manifest(manifest: Manifest, folder: Path) -> None:
    if manifest.architecture not in ARCHITECTURES:
        raise WeightsError(
            f"{folder}: unknown architecture {manifest.architecture!r}; known: {', '.join(ARCHITECTURES)}"
        )
    if tuple(manifest.input_modalities) != MODALITIES or tuple(manifest.outputs) != REGIONS:
        raise WeightsError(
            f"{folder}: expects inputs {manifest.input_modalities} and outputs {manifest.outputs}; this "
            f"version supports inputs {MODALITIES} and outputs {REGIONS}."
        )


def save_model(network: torch.nn.Module, manifest: Manifest, folder: Path, onnx: bool = False) -> Manifest:
    """Write ``weights.safetensors`` and ``manifest.json`` (with the weights' sha256) into ``folder``; with ``onnx``
    also ``network.onnx`` made from those weights (listed in the manifest), else any old ONNX file is removed.

    Returns:
        The manifest as written, with ``sha256`` (and ``onnx``) filled in.
    """
    folder.mkdir(parents=True, exist_ok=True)
    written = replace(manifest, sha256=_write_weights(network, folder / WEIGHTS_NAME), ensemble=(), onnx=None)
    (folder / ONNX_NAME).unlink(missing_ok=True)
    if onnx:
        export_onnx(network, written.roi_size, folder / ONNX_NAME)
        (folder / ONNX_NAME).chmod(0o644)
        written = replace(written, onnx=OnnxFile(ONNX_NAME, sha256_of(folder / ONNX_NAME), written.roi_size,
                                                 written.sha256))
    (folder / MANIFEST_NAME).write_text(json.dumps(written.to_json(), indent=2) + "\n", encoding="utf-8")
    return written


def save_ensemble(members: Mapping[str, torch.nn.Module], manifest: Manifest, folder: Path) -> Manifest:
    """Write ``<stem>.safetensors`` per member network and an ensemble ``manifest.json`` into ``folder``.

    Args:
        members: file stem (e.g. "fold0") -> network, in ensemble order; all of ``manifest``'s architecture.

    Returns:
        The manifest as written, with ``ensemble`` and its digest ``sha256`` filled in.
    """
    folder.mkdir(parents=True, exist_ok=True)
    listed = tuple(EnsembleMember(f"{stem}.safetensors", _write_weights(network, folder / f"{stem}.safetensors"))
                   for stem, network in members.items())
    written = replace(manifest, sha256=ensemble_sha256(listed), ensemble=listed, onnx=None)
    (folder / MANIFEST_NAME).write_text(json.dumps(written.to_json(), indent=2) + "\n", encoding="utf-8")
    return written


def _write_weights(network: torch.nn.Module, path: Path) -> str:
    """Save the network's tensors to ``path`` (mode 0644, readable by the container's user); returns the sha256."""
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in network.state_dict().items()}
    save_file(tensors, str(path))
    path.chmod(0o644)
    return sha256_of(path)


def find_model_folders(models_root: Path) -> list[Path]:
    """The model folders (those holding a manifest) directly under ``models_root``, sorted by name."""
    if not models_root.is_dir():
        raise WeightsError(f"{models_root}: not a folder of model folders; pass --models DIR.")
    if not os.access(models_root, os.R_OK | os.X_OK):
        raise WeightsError(f"{models_root}: cannot be read by this user (uid {os.getuid()}); make it readable.")
    folders = sorted(p.parent for p in models_root.glob(f"*/{MANIFEST_NAME}"))
    if not folders:
        raise WeightsError(f"{models_root}: no model folders (*/{MANIFEST_NAME}) found; pass --models DIR.")
    return folders
