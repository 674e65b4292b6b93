"""The FUN-AD loss: L = L_bal + lambda * L_MS (docs/method.md, step 5)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def balanced_bce(anomalous_logits: torch.Tensor, normal_logits: torch.Tensor) -> torch.Tensor:
    """mean BCE over pseudo-anomalies + mean BCE over pseudo-normals; an empty side adds 0."""
    loss = anomalous_logits.new_zeros(())
    if anomalous_logits.numel():
        loss = loss + F.binary_cross_entropy_with_logits(anomalous_logits, torch.ones_like(anomalous_logits))
    if normal_logits.numel():
        loss = loss + F.binary_cross_entropy_with_logits(normal_logits, torch.zeros_like(normal_logits))
    return loss


def mutual_smoothness(scores: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """L_MS: mean absolute score difference over mutually-nearest pairs (MAE resists label noise)."""
    if len(pairs) == 0:
        return scores.new_zeros(())
    return (scores[pairs[:, 0]] - scores[pairs[:, 1]]).abs().mean()
