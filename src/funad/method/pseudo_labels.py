"""Patch pseudo-labels from pairwise distances to the memory bank (docs/method.md, steps 2 and 3)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


def min_max_normalise(values: torch.Tensor) -> torch.Tensor:
    """Scale to [0, 1]; a constant input (zero range) maps to all zeros instead of NaN."""
    low, high = values.min(), values.max()
    span = high - low
    if not torch.isfinite(span) or span <= 0:
        return torch.zeros_like(values)
    return (values - low) / span


@dataclass
class PseudoLabels:
    normalised_distance: torch.Tensor  # d-hat in [0, 1]
    anomalous: torch.Tensor  # y = 1[d-hat > tau_n]
    ambiguous: torch.Tensor  # tau_n < d-hat < tau_a: labelled anomalous, fed with noise


def assign_pseudo_labels(distances: torch.Tensor, tau_n: float, tau_a: float) -> PseudoLabels:
    """Min-max normalise the batch's NN distances, then threshold them.

    A query with no admissible bank entry (``inf``) counts as the farthest one.
    """
    finite = torch.isfinite(distances)
    if finite.any():
        distances = torch.where(finite, distances, distances[finite].max())
    else:
        distances = torch.zeros_like(distances)
    normalised = min_max_normalise(distances)
    anomalous = normalised > tau_n
    ambiguous = anomalous & (normalised < tau_a)
    return PseudoLabels(normalised, anomalous, ambiguous)


def noise_scale(batch_features: torch.Tensor) -> torch.Tensor:
    """Per-channel sigma: the std over the batch's images, maximised over patch positions.

    ``batch_features``: ``[B, P, D]`` with the same P positions in every image.
    """
    return batch_features.std(dim=0).amax(dim=0)


def perturb(features: torch.Tensor, sigma: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A noisy copy p + eps, eps ~ N(0, diag(sigma^2)); the input is left untouched."""
    noise = torch.randn(features.shape, generator=generator, device=features.device, dtype=features.dtype)
    return features + noise * sigma
