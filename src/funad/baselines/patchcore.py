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

import faiss
import numpy as np
import torch

from funad.features.extraction import MethodFeatures

#: PatchCore's Johnson-Lindenstrauss target dimension for coreset selection.
PROJECTION_DIM = 128
#: b of the paper's reweighting: neighbours of the nearest bank entry that set its local density.
REWEIGHT_NEIGHBOURS = 9


def greedy_coreset(features: torch.Tensor, count: int, *, projection_dim: int | None = PROJECTION_DIM,
                   seed: int = 0) -> np.ndarray:
    """Indices of ``count`` rows of ``features`` [N, D] chosen by greedy k-center selection.

    Starting from a random row, each step adds the row farthest from everything chosen so far,
    which minimises the largest distance from any row to its nearest chosen one (up to a factor
    of 2). Distances are measured after a Gaussian random projection to ``projection_dim``
    dimensions when that is smaller than D (None: exact distances).
    """
    count = int(count)
    if not 1 <= count <= len(features):
        raise ValueError(f"coreset size must lie in [1, {len(features)}], got {count}")
    generator = torch.Generator().manual_seed(seed)
    points = features.float()
    if projection_dim and projection_dim < points.shape[1]:
        projection = torch.randn(points.shape[1], projection_dim, generator=generator) / projection_dim**0.5
        points = points @ projection
    squared_norms = points.pow(2).sum(1)
    chosen = torch.empty(count, dtype=torch.long)
    chosen[0] = int(torch.randint(len(points), (1,), generator=generator))
    # Squared distance of every row to its nearest chosen row, expanded as |x|^2 - 2 x.c + |c|^2
    # so that each step is one matrix-vector product.
    nearest = torch.full((len(points),), float("inf"))
    for step in range(count):
        if step:
            chosen[step] = int(torch.argmax(nearest))
        centre = points[chosen[step]]
        distances = torch.addmv(squared_norms + squared_norms[chosen[step]], points, centre, alpha=-2)
        torch.minimum(nearest, distances, out=nearest)
    return chosen.numpy()


def coreset_size(num_patches: int, fraction: float) -> int:
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"coreset fraction must lie in (0, 1], got {fraction}")
    return max(1, int(round(fraction * num_patches)))


class NearestNeighbourBank:
    """A faiss index over bank patches: Euclidean distance to, and index of, the nearest entry."""

    def __init__(self, bank: torch.Tensor):
        self.bank = bank.float().contiguous().numpy()
        self.index = faiss.IndexFlatL2(self.bank.shape[1])
        self.index.add(self.bank)

    def search(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        distances, indices = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return np.sqrt(np.maximum(distances, 0.0)), indices

    def __len__(self) -> int:
        return len(self.bank)


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
        self.bank_ = NearestNeighbourBank(patches[chosen])
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
        anchors = self.bank_.bank[nearest[worst]]
        _, neighbourhoods = self.bank_.search(anchors, min(REWEIGHT_NEIGHBOURS, len(self.bank_)))
        queries = flat[worst][:, None, :]
        distances = np.linalg.norm(self.bank_.bank[neighbourhoods] - queries, axis=2)
        anchor_distance = patch_scores.max(axis=1)[:, None]
        return 1.0 - 1.0 / np.exp(distances - anchor_distance).sum(axis=1)
