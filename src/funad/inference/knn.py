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
        rows, image_ids = [], []
        for image in indices:
            positions = np.sort(rng.choice(features.num_patches, min(per_image, features.num_patches), replace=False))
            rows.append(features.take([image], positions)[0])
            image_ids.append(np.full(len(positions), image))
        return self.set_bank(torch.cat(rows), np.concatenate(image_ids))

    def set_bank(self, bank: torch.Tensor, image_ids: np.ndarray | None = None) -> "NearestNeighbourScorer":
        """``image_ids`` (the training image of each entry) is known only at fit time; a loaded bank has none."""
        self.bank_ = bank.float().contiguous()
        self.image_ids_ = image_ids
        self.index_ = faiss.IndexFlatL2(self.bank_.shape[1])
        self.index_.add(self.bank_.numpy())
        return self

    def score(self, patches: torch.Tensor) -> torch.Tensor:
        """Euclidean distance of each patch to its nearest bank entry; ``[B, K, D]`` -> ``[B, K]``."""
        flat = patches.reshape(-1, patches.shape[-1]).float().cpu().contiguous().numpy()
        distances, _ = self.index_.search(flat, 1)
        return torch.from_numpy(np.sqrt(np.maximum(distances[:, 0], 0))).view(patches.shape[:-1])

    def training_image_scores(self, features: MethodFeatures) -> np.ndarray:
        """Each training image's score as :meth:`score` gives it, but against the bank without its own patches.

        A banked image would otherwise find itself and score ~0, so these are the scores new
        images are comparable with (the label-free threshold is set on them).
        """
        if self.image_ids_ is None:
            raise RuntimeError("training_image_scores needs the bank's image ids, which only fit() records")
        # An image has at most this many bank entries, so one more neighbour always reaches another image.
        neighbours = min(len(self.image_ids_), int(np.bincount(self.image_ids_).max()) + 1)
        scores = np.empty(len(features))
        for image in range(len(features)):
            queries = features.take([image])[0].contiguous().numpy()
            distances, hits = self.index_.search(queries, neighbours)
            other = self.image_ids_[hits] != image
            first_other = np.argmax(other, axis=1)
            nearest = distances[np.arange(len(queries)), first_other]
            scores[image] = np.sqrt(np.maximum(nearest, 0)).max()
        return scores
