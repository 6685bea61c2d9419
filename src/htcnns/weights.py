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
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from htcnns.errors import WeightsError
from htcnns.labels import MODALITIES, REGIONS
from htcnns.networks import ARCHITECTURES, build_network
from htcnns.networks.ensemble import EnsembleNetwork
from htcnns.postprocess import PostprocessParams

MANIFEST_NAME = "manifest.json"
WEIGHTS_NAME = "weights.safetensors"
FORMAT_VERSION = 1


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

    def to_json(self) -> dict[str, Any]:
        """The manifest as written to disk (with the fixed label semantics spelled out)."""
        data = asdict(self)
        data["format_version"] = FORMAT_VERSION
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
            return cls(**fields)
        except (KeyError, TypeError) as error:
            raise WeightsError(f"{source}: manifest is incomplete or has unknown fields ({error})") from error


@dataclass(frozen=True)
class LoadedModel:
    """A verified network in eval mode on its device, with its manifest."""

    manifest: Manifest
    network: torch.nn.Module
    folder: Path


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
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise WeightsError(f"{path}: cannot read the model manifest ({error})") from error
    return Manifest.from_json(data, path)


def load_model(folder: Path, device: torch.device | str = "cpu") -> LoadedModel:
    """Verify and load one model folder.

    Raises:
        WeightsError: the manifest is missing or malformed, the checksum differs, the architecture is
            unknown, or the tensors do not fit the architecture.
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
    return LoadedModel(manifest, network.to(device).eval(), folder)


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


def save_model(network: torch.nn.Module, manifest: Manifest, folder: Path) -> Manifest:
    """Write ``weights.safetensors`` and ``manifest.json`` (with the weights' sha256) into ``folder``.

    Returns:
        The manifest as written, with ``sha256`` filled in.
    """
    folder.mkdir(parents=True, exist_ok=True)
    written = replace(manifest, sha256=_write_weights(network, folder / WEIGHTS_NAME), ensemble=())
    (folder / MANIFEST_NAME).write_text(json.dumps(written.to_json(), indent=2) + "\n")
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
    written = replace(manifest, sha256=ensemble_sha256(listed), ensemble=listed)
    (folder / MANIFEST_NAME).write_text(json.dumps(written.to_json(), indent=2) + "\n")
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
