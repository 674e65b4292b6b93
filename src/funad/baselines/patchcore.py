"""PatchCore (Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022).

Built from the paper's description on this package's cached patch features:

* memory bank = a greedy k-center coreset of every training patch (10 % by default), selected
  in a Johnson-Lindenstrauss random projection to 128 dimensions (the paper's speed-up);
* patch score = Euclidean distance to the nearest bank entry (faiss, exact search);
* image score = the largest patch score, optionally reweighted as in the paper's eq. 7.

Deviations: the backbone is whatever produced the features (not WRN50 layers 2+3 with 3x3
local averaging), and the coreset starts from one seeded random patch.
"""

from __future__ import annotations

import numpy as np
import torch

from funad.features.extraction import MethodFeatures
from funad.inference.coreset import PROJECTION_DIM, coreset_size, greedy_coreset
from funad.inference.knn import NearestNeighbourScorer

#: b of the paper's reweighting: neighbours of the nearest bank entry that set its local density.
REWEIGHT_NEIGHBOURS = 9


def all_patches(features: MethodFeatures, image_indices: np.ndarray | None = None) -> torch.Tensor:
    """Every patch of the chosen images as float32 [n * K, D]."""
    indices = np.arange(len(features)) if image_indices is None else np.asarray(image_indices)
    return features.take(indices).reshape(-1, features.dim)


class PatchCore:
    """PatchCore on precomputed patch features: ``fit(features)``, then ``score(patches)``."""

    def __init__(self, coreset_fraction: float = 0.1, *, projection_dim: int | None = PROJECTION_DIM,
                 reweight: bool = False, seed: int = 0):
        self.coreset_fraction = coreset_fraction
        self.projection_dim = projection_dim
        self.reweight = reweight
        self.seed = seed

    def fit(self, features: MethodFeatures) -> "PatchCore":
        patches = all_patches(features)
        chosen = greedy_coreset(patches, coreset_size(len(patches), self.coreset_fraction),
                                projection_dim=self.projection_dim, seed=self.seed)
        self.bank_ = NearestNeighbourScorer().set_bank(patches[chosen])
        return self

    def score(self, patches: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """``[B, K, D]`` -> (image scores [B], patch scores [B, K])."""
        flat = patches.reshape(-1, patches.shape[-1]).numpy()
        distances, nearest = self.bank_.search(flat)
        patch_scores = distances[:, 0].reshape(patches.shape[:2])
        image_scores = patch_scores.max(axis=1)
        if self.reweight:
            image_scores = image_scores * self._density_weights(flat, nearest[:, 0], patch_scores)
        return image_scores, patch_scores

    def _density_weights(self, flat: np.ndarray, nearest: np.ndarray, patch_scores: np.ndarray) -> np.ndarray:
        """The paper's eq. 7 factor 1 - exp(|m_test - m*|) / sum_{m in N_b(m*)} exp(|m_test - m|).

        m_test is each image's highest-scoring patch and m* its nearest bank entry; N_b(m*) are the
        b bank entries nearest to m* (m* itself among them). When those neighbours are all far from
        m_test (m* is an isolated, rare normal) the factor nears 1 and the score stands; when they
        are as close as m* (a dense, well-covered region) it drops to 1 - 1/b.
        Written as 1 - 1 / sum exp(d_m - d*) so that large distances cannot overflow.
        """
        num_images, num_patches = patch_scores.shape
        worst = np.arange(num_images) * num_patches + patch_scores.argmax(axis=1)
        anchors = self.bank_.bank_array_[nearest[worst]]
        _, neighbourhoods = self.bank_.search(anchors, min(REWEIGHT_NEIGHBOURS, len(self.bank_)))
        queries = flat[worst][:, None, :]
        distances = np.linalg.norm(self.bank_.bank_array_[neighbourhoods] - queries, axis=2)
        anchor_distance = patch_scores.max(axis=1)[:, None]
        return 1.0 - 1.0 / np.exp(distances - anchor_distance).sum(axis=1)
