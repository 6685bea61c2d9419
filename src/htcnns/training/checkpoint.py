"""Training checkpoints that resume: ``checkpoint.safetensors`` (tensors) and ``checkpoint.json`` (the rest).

No pickle: the network's and the optimiser's tensors and torch's RNG state go into safetensors; the step, the
optimiser's hyper-parameters, the LR schedule, numpy's RNG state, the loss/Dice history and the run's config go into
JSON, which also records the sha256 of the tensor file. Both are written atomically, tensors first. A run killed
between the two renames (a few milliseconds) leaves a pair whose checksums disagree: resuming then refuses it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from htcnns.errors import SettingsError, WeightsError
from htcnns.inference.io import atomic_write, atomic_write_text
from htcnns.weights import sha256_of

CHECKPOINT_TENSORS = "checkpoint.safetensors"
CHECKPOINT_STATE = "checkpoint.json"
CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class Learner:
    """What a training step changes: the network, its optimiser and LR schedule, and the patch sampler's RNG."""

    network: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    rng: np.random.Generator


@dataclass
class Progress:
    """Where a run stands; the step loop updates it and every checkpoint saves it.

    step: steps done. losses: the loss of each step done. evaluations: ``{"step": n, "dice": {WT, TC, ET}}`` per
    validation. elapsed_s: wall time of the run so far, summed over the sessions of a resumed run.
    """

    step: int = 0
    losses: list[float] = field(default_factory=list)
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    elapsed_s: float = 0.0


def save_checkpoint(folder: Path, learner: Learner, progress: Progress, config: dict[str, Any]) -> None:
    """Write the checkpoint pair into ``folder`` (module docstring); ``config`` must be JSON-serialisable."""
    tensors, optimizer = _split_optimizer(learner.optimizer.state_dict())
    tensors |= {f"network/{k}": v.detach().cpu().contiguous() for k, v in learner.network.state_dict().items()}
    tensors["rng/torch"] = torch.get_rng_state()
    path = folder / CHECKPOINT_TENSORS
    atomic_write(path, lambda temporary: save_file(tensors, str(temporary)), suffix=".part.safetensors")
    state = {"format_version": CHECKPOINT_VERSION, "step": progress.step, "config": _plain(config),
             "tensors_sha256": sha256_of(path), "optimizer": optimizer, "schedule": learner.schedule.state_dict(),
             "numpy_rng": learner.rng.bit_generator.state, "progress": asdict(progress)}
    atomic_write_text(folder / CHECKPOINT_STATE, json.dumps(state) + "\n")


def load_checkpoint(folder: Path, learner: Learner, config: dict[str, Any]) -> Progress:
    """Restore ``learner`` in place from ``folder``'s checkpoint; returns the progress it had reached.

    Raises:
        SettingsError: there is no checkpoint, or it was written by a run with another ``config``.
        WeightsError: the pair is unreadable, inconsistent or does not fit the network.
    """
    state, wanted = _read_state(folder), _plain(config)
    changed = sorted(key for key in {*state["config"], *wanted} if state["config"].get(key) != wanted.get(key))
    if changed:
        raise SettingsError(f"{folder / CHECKPOINT_STATE}: written by a run with other settings ({', '.join(changed)}"
                            "); resume with the options of that run, or start afresh without --resume")
    tensors = _read_tensors(folder / CHECKPOINT_TENSORS, state["tensors_sha256"])
    try:
        learner.network.load_state_dict({k[8:]: v for k, v in tensors.items() if k.startswith("network/")})
        learner.optimizer.load_state_dict(_join_optimizer(tensors, state["optimizer"]))
    except (RuntimeError, ValueError, KeyError) as error:
        raise WeightsError(f"{folder / CHECKPOINT_TENSORS}: does not fit this network ({error})") from error
    learner.schedule.load_state_dict(state["schedule"])
    learner.rng.bit_generator.state = state["numpy_rng"]
    torch.set_rng_state(tensors["rng/torch"])
    return Progress(**state["progress"])


def _read_state(folder: Path) -> dict[str, Any]:
    path = folder / CHECKPOINT_STATE
    if not path.is_file():
        raise SettingsError(f"--resume: no checkpoint in {folder} ({CHECKPOINT_STATE} is missing); run without "
                            "--resume to start afresh")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise WeightsError(f"{path}: cannot read the checkpoint ({error})") from error
    if state.get("format_version") != CHECKPOINT_VERSION:
        raise WeightsError(f"{path}: checkpoint format {state.get('format_version')!r}, expected {CHECKPOINT_VERSION}")
    return state


def _read_tensors(path: Path, expected_sha256: str) -> dict[str, torch.Tensor]:
    if not path.is_file() or sha256_of(path) != expected_sha256:
        raise WeightsError(f"{path}: missing or not the file {CHECKPOINT_STATE} was written with (a run killed "
                           "while writing its checkpoint?); start afresh without --resume")
    return load_file(path)


def _split_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimiser state dict as safetensors tensors ``optimizer/<param>/<key>`` and a JSON-ready rest."""
    tensors, scalars = {}, {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{index}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": _plain(state["param_groups"]), "state": scalars}


def _join_optimizer(tensors: dict[str, torch.Tensor], saved: dict[str, Any]) -> dict[str, Any]:
    """The optimiser state dict back from ``_split_optimizer``'s two parts (lists become tuples, as ``betas``)."""
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        if name.startswith("optimizer/"):
            _, index, key = name.split("/", 2)
            state.setdefault(int(index), {})[key] = tensor
    for index, extra in saved["state"].items():
        state.setdefault(int(index), {}).update(extra)
    groups = [{k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in group.items()}
              for group in saved["param_groups"]]
    return {"state": state, "param_groups": groups}


def _plain(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(value))
