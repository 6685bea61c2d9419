"""Several trained networks of one architecture used as one (the fold models of a cross-validation)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

PROBABILITY_EPS = 1e-6


class EnsembleNetwork(nn.Module):
    """Averages its members' sigmoid probabilities and returns them as logits.

    ``sigmoid(forward(x))`` is the members' mean probability, clamped to [1e-6, 1 - 1e-6], so the sliding
    window and post-processing treat an ensemble like one network.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member network")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``x`` (N, C_in, D, H, W) to float32 logits (N, C_out, D, H, W) of the mean probability."""
        probs = torch.stack([torch.sigmoid(member(x).float()) for member in self.members]).mean(dim=0)
        return torch.logit(probs, eps=PROBABILITY_EPS)
