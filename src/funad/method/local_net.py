"""Local-Net phi = h o a: the only trained part of FUN-AD (spec, "Local-Net")."""

from __future__ import annotations

import torch
from torch import nn


class LocalNet(nn.Module):
    """Feature adaptor ``a`` (Linear(D, D) + LeakyReLU) followed by the scoring head ``h``.

    ``h``: Linear(D, 1024) - LReLU - Linear(1024, 128) - LReLU - Linear(128, 1) - Sigmoid.
    The head returns logits; :meth:`score` applies the sigmoid, and the loss uses the logits
    for numerically stable binary cross-entropy.
    """

    def __init__(self, dim: int, hidden: tuple[int, int] = (1024, 128), slope: float = 0.2):
        super().__init__()
        self.dim = dim
        self.adaptor = nn.Sequential(nn.Linear(dim, dim), nn.LeakyReLU(slope))
        self.head = nn.Sequential(
            nn.Linear(dim, hidden[0]), nn.LeakyReLU(slope),
            nn.Linear(hidden[0], hidden[1]), nn.LeakyReLU(slope),
            nn.Linear(hidden[1], 1),
        )

    def adapt(self, features: torch.Tensor) -> torch.Tensor:
        return self.adaptor(features)

    def logits(self, adapted: torch.Tensor) -> torch.Tensor:
        return self.head(adapted).squeeze(-1)

    def score(self, features: torch.Tensor) -> torch.Tensor:
        """Patch scores s = h(a(p)) in (0, 1), shape ``features.shape[:-1]``."""
        return torch.sigmoid(self.logits(self.adapt(features)))
