"""Checkpoints: a saved learner restores exactly (weights, Adam, schedule, both RNGs); bad pairs are refused."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from torch import nn

from htcnns.errors import SettingsError, WeightsError
from htcnns.training.checkpoint import (
    CHECKPOINT_STATE,
    CHECKPOINT_TENSORS,
    Learner,
    Progress,
    load_checkpoint,
    save_checkpoint,
)

CONFIG = {"steps": 10, "seed": 3, "shape": (4, 4, 4)}


def learner(seed: int) -> Learner:
    torch.manual_seed(seed)
    network = nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.Conv3d(4, 1, 1))
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-2, weight_decay=1e-5)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)
    return Learner(network, optimizer, schedule, np.random.default_rng(seed))


def step(learned: Learner) -> float:
    x = torch.from_numpy(learned.rng.standard_normal((2, 2, 6, 6, 6)).astype(np.float32))
    learned.optimizer.zero_grad()
    loss = (learned.network(x) - torch.rand(2, 1, 6, 6, 6)).square().mean()
    loss.backward()
    learned.optimizer.step()
    learned.schedule.step()
    return loss.item()


def test_restored_learner_continues_exactly(tmp_path: Path):
    original = learner(0)
    losses = [step(original) for _ in range(3)]
    save_checkpoint(tmp_path, original, Progress(3, losses, [{"step": 2, "dice": {"WT": 0.5}}], 1.5), CONFIG)
    expected = [step(original) for _ in range(2)]  # draws from torch's global RNG, which the checkpoint restores
    restored = learner(1)
    progress = load_checkpoint(tmp_path, restored, CONFIG)
    assert progress == Progress(3, losses, [{"step": 2, "dice": {"WT": 0.5}}], 1.5)
    assert restored.schedule.last_epoch == 3 and restored.optimizer.param_groups[0]["betas"] == (0.9, 0.999)
    assert [step(restored) for _ in range(2)] == expected
    for name, tensor in original.network.state_dict().items():
        assert torch.equal(tensor, restored.network.state_dict()[name])
    state = json.loads((tmp_path / CHECKPOINT_STATE).read_text())
    assert state["step"] == 3 and state["optimizer"]["param_groups"][0]["weight_decay"] == 1e-5
    with safe_open(tmp_path / CHECKPOINT_TENSORS, "pt") as tensors:
        assert {"network/0.weight", "optimizer/0/exp_avg", "optimizer/0/step", "rng/torch"} <= set(tensors.keys())


def test_checkpoint_of_another_run_is_refused(tmp_path: Path):
    save_checkpoint(tmp_path, learner(0), Progress(), CONFIG)
    with pytest.raises(SettingsError, match=r"other settings \(seed, steps\)"):
        load_checkpoint(tmp_path, learner(0), {**CONFIG, "steps": 20, "seed": 4})


def test_missing_or_mismatched_checkpoint(tmp_path: Path):
    with pytest.raises(SettingsError, match="no checkpoint in"):
        load_checkpoint(tmp_path, learner(0), CONFIG)
    save_checkpoint(tmp_path, learner(0), Progress(), CONFIG)
    tensors = tmp_path / CHECKPOINT_TENSORS
    data = bytearray(tensors.read_bytes())
    data[-1] ^= 0xFF
    tensors.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="not the file checkpoint.json was written with"):
        load_checkpoint(tmp_path, learner(0), CONFIG)
