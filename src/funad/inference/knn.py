"""A nearest-neighbour (PatchCore-style) patch scorer on raw backbone features.

FUN-AD's default scorer: a bank built only from the training images the method judged normal
(a greedy coreset of their patches). Built from every training image it is the plain
contaminated baseline; the PatchCore and SoftPatch baselines search with it too.
"""

from __future__ import annotations

from typing import Literal

import faiss
import numpy as np
import torch

from funad.features.extraction import MethodFeatures
from funad.inference.coreset import coreset_size, greedy_coreset


class NearestNeighbourScorer:
    """``fit(features, image_indices)`` banks a share of the chosen images' patches; ``score`` searches it.

    ``sampling="coreset"`` keeps a greedy k-center coreset of all their patches (covers rare
    normal patterns with few entries); ``"random"`` keeps a random share of each image's patches.
    """

    def __init__(self, patch_fraction: float = 0.01, seed: int = 0,
                 sampling: Literal["coreset", "random"] = "coreset"):
        self.patch_fraction = patch_fraction
        self.seed = seed
        self.sampling = sampling

    def fit(self, features: MethodFeatures, image_indices: np.ndarray | None = None) -> "NearestNeighbourScorer":
        indices = np.arange(len(features)) if image_indices is None else np.asarray(image_indices)
        if self.sampling == "coreset":
            patches = features.take(indices).reshape(-1, features.dim)
            image_ids = np.repeat(indices, features.num_patches)
            chosen = greedy_coreset(patches, coreset_size(len(patches), self.patch_fraction), seed=self.seed)
            return self.set_bank(patches[chosen], image_ids[chosen])
        rng = np.random.default_rng(self.seed)
        per_image = min(features.num_patches, coreset_size(features.num_patches, self.patch_fraction))
        positions = [np.sort(rng.choice(features.num_patches, per_image, replace=False)) for _ in indices]
        bank = features.take_rows(indices, positions).reshape(-1, features.dim)
        return self.set_bank(bank, np.repeat(indices, per_image))

    def set_bank(self, bank: torch.Tensor, image_ids: np.ndarray | None = None) -> "NearestNeighbourScorer":
        """``image_ids`` (the training image of each entry) is known only at fit time; a loaded bank has none."""
        self.bank_ = bank.float().contiguous()
        self.bank_array_ = self.bank_.numpy()
        self.image_ids_ = image_ids
        self.index_ = faiss.IndexFlatL2(self.bank_.shape[1])
        self.index_.add(self.bank_array_)
        return self

    def __len__(self) -> int:
        return len(self.bank_)

    def search(self, queries: np.ndarray | torch.Tensor, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Euclidean distances to, and indices of, the ``k`` nearest bank entries: ``[Q, k]`` each."""
        if isinstance(queries, torch.Tensor):
            queries = queries.detach().float().cpu().numpy()
        distances, indices = self.index_.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return np.sqrt(np.maximum(distances, 0.0)), indices

    def score(self, patches: torch.Tensor) -> torch.Tensor:
        """Distance of each patch to its nearest bank entry; ``[B, K, D]`` -> ``[B, K]``."""
        distances, _ = self.search(patches.reshape(-1, patches.shape[-1]))
        return torch.from_numpy(distances[:, 0]).view(patches.shape[:-1])

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
            distances, hits = self.search(features.take([image])[0], neighbours)
            first_other = np.argmax(self.image_ids_[hits] != image, axis=1)
            scores[image] = distances[np.arange(len(distances)), first_other].max()
        return scores
