"""Local-Net phi = h o a: the only trained part of FUN-AD (docs/method.md, "Local-Net")."""

from __future__ import annotations

from typing import Any

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
        self.hidden = (int(hidden[0]), int(hidden[1]))
        self.slope = float(slope)
        self.adaptor = nn.Sequential(nn.Linear(dim, dim), nn.LeakyReLU(slope))
        self.head = nn.Sequential(
            nn.Linear(dim, hidden[0]), nn.LeakyReLU(slope),
            nn.Linear(hidden[0], hidden[1]), nn.LeakyReLU(slope),
            nn.Linear(hidden[1], 1),
        )

    def adapt(self, features: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.adaptor(features)
        return result

    def logits(self, adapted: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.head(adapted).squeeze(-1)
        return result

    def score(self, features: torch.Tensor) -> torch.Tensor:
        """Patch scores s = h(a(p)) in (0, 1), shape ``features.shape[:-1]``."""
        return torch.sigmoid(self.logits(self.adapt(features)))

    # ----------------------------------------------------------------- saving
    #: Where its tensors are named in a file that holds other parts too (the model's, a training checkpoint's).
    STATE_PREFIX = "local_net."

    def architecture(self) -> dict[str, Any]:
        """The constructor's arguments, as JSON."""
        return {"dim": self.dim, "hidden": list(self.hidden), "slope": self.slope}

    def tensors(self) -> dict[str, torch.Tensor]:
        """The weights as plain CPU tensors."""
        return {name: value.detach().cpu().contiguous() for name, value in self.state_dict().items()}

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], architecture: dict[str, Any]) -> LocalNet:
        """The network :meth:`tensors` and :meth:`architecture` describe, in eval mode.

        Raises ValueError when the tensors do not fit the architecture.
        """
        net = cls(int(architecture["dim"]), tuple(architecture["hidden"]), float(architecture["slope"]))
        try:
            net.load_state_dict(tensors)
        except RuntimeError as error:
            raise ValueError(f"the Local-Net weights do not fit {architecture} ({' '.join(str(error).split())})") \
                from error
        return net.eval()
