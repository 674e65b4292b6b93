"""A nearest-neighbour (PatchCore-style) patch scorer on raw backbone features.

FUN-AD uses it to score with a bank built only from the training images it judged normal;
built from every training image, it is the plain contaminated baseline.
"""

from __future__ import annotations

import faiss
import numpy as np
import torch

from funad.features.extraction import MethodFeatures


class NearestNeighbourScorer:
    def __init__(self, patch_fraction: float = 0.1, seed: int = 0):
        self.patch_fraction = patch_fraction
        self.seed = seed

    def fit(self, features: MethodFeatures, image_indices: np.ndarray | None = None) -> "NearestNeighbourScorer":
        """Bank a random ``patch_fraction`` of the patches of the chosen images (all by default)."""
        rng = np.random.default_rng(self.seed)
        indices = np.arange(len(features)) if image_indices is None else np.asarray(image_indices)
        per_image = max(1, int(round(self.patch_fraction * features.num_patches)))
        rows = []
        for image in indices:
            positions = np.sort(rng.choice(features.num_patches, min(per_image, features.num_patches), replace=False))
            rows.append(features.take([image], positions)[0])
        return self.set_bank(torch.cat(rows))

    def set_bank(self, bank: torch.Tensor) -> "NearestNeighbourScorer":
        self.bank_ = bank.float().contiguous()
        self.index_ = faiss.IndexFlatL2(self.bank_.shape[1])
        self.index_.add(self.bank_.numpy())
        return self

    def score(self, patches: torch.Tensor) -> torch.Tensor:
        """Euclidean distance of each patch to its nearest bank entry; ``[B, K, D]`` -> ``[B, K]``."""
        flat = patches.reshape(-1, patches.shape[-1]).float().cpu().contiguous().numpy()
        distances, _ = self.index_.search(flat, 1)
        return torch.from_numpy(np.sqrt(np.maximum(distances[:, 0], 0))).view(patches.shape[:-1])
