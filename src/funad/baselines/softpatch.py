"""SoftPatch (Jiang et al., "SoftPatch: Unsupervised Anomaly Detection with Noisy Data", NeurIPS 2022).

Built from the paper's description: PatchCore with patch-level noise discrimination before the
coreset.

1. **Noise discrimination.** For each patch position, the training images' patches at that
   position are compared with each other: a Local Outlier Factor (LOF, k = 6) over them gives each
   patch an outlier score. Aligned objects make the same position comparable across images, so a
   defect patch stands out among the normal patches at its place.
2. **Denoising.** At every position the ``noise_fraction`` (tau, 0.15 by default as in the
   paper's experiments) patches with the highest outlier score are dropped.
3. **Coreset** on the remaining patches (greedy k-center, as PatchCore).
4. **Soft reweighting** (the paper's "lof" weighting): a test patch's score is its distance to the
   nearest bank entry times that entry's LOF value, so a noisy patch that survived the filter
   (LOF > 1) explains less away. Image score = the largest patch score.

Deviations: the paper also offers nearest-neighbour and Gaussian outlier scores; only LOF is
implemented. The backbone is whatever produced the cached features.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Self

import numpy as np
import torch

from funad.config import POOL_MAX_PATCHES
from funad.features.containers import MethodFeatures
from funad.inference.coreset import PROJECTION_DIM, coreset_size, greedy_coreset
from funad.inference.patch_bank import PatchBank, highest_searched_exactly, read_rows, sample_rows
from funad.inference.scorers.base import PatchScorer, ScorerState, highest_patch_scores, register_scorer

if TYPE_CHECKING:
    from funad.config import FunADConfig
    from funad.method.local_net import LocalNet

#: SoftPatch's LOF neighbourhood size.
LOF_NEIGHBOURS = 6
#: Beyond this many training images the per-position LOF is fitted on a random sample of this
#: many (its cost grows with the square of the images it compares; see ``SoftPatch._fit_sampled``).
LOF_REFERENCE_IMAGES = 1000


def positional_outlier_factors(patches: torch.Tensor, neighbours: int = LOF_NEIGHBOURS) -> np.ndarray:
    """LOF of every patch among the same position's patches of all images: [N, K, D] -> [N, K] (~1 = inlier)."""
    num_images, num_positions, _ = patches.shape
    if num_images < 3:
        raise ValueError(f"SoftPatch's per-position outlier factor needs at least 3 training images, got {num_images}")
    from sklearn.neighbors import LocalOutlierFactor  # scikit-learn (1 s to import) only when fitting SoftPatch

    factors = np.empty((num_images, num_positions))
    lof = LocalOutlierFactor(n_neighbors=min(neighbours, num_images - 1))
    for position in range(num_positions):
        lof.fit(patches[:, position].numpy())
        factors[:, position] = -lof.negative_outlier_factor_
    return factors


def keep_inliers(factors: np.ndarray, noise_fraction: float) -> np.ndarray:
    """Boolean [N, K]: at each position all but the ``int(noise_fraction * N)`` highest outlier factors."""
    if not 0.0 <= noise_fraction < 1.0:
        raise ValueError(f"noise_fraction must lie in [0, 1), got {noise_fraction}")
    num_images = factors.shape[0]
    dropped = int(noise_fraction * num_images)
    ranks = np.argsort(np.argsort(-factors, axis=0, kind="stable"), axis=0, kind="stable")
    return ranks >= dropped


@register_scorer("softpatch")
class SoftPatch(PatchScorer):
    """SoftPatch on precomputed patch features: ``fit(features)``, then ``score_patches(patches)``."""

    score_range = None

    def __init__(self, noise_fraction: float = 0.15, coreset_fraction: float = 0.1, *,
                 lof_neighbours: int = LOF_NEIGHBOURS, projection_dim: int | None = PROJECTION_DIM, seed: int = 0,
                 pool_max_patches: int | None = POOL_MAX_PATCHES, lof_reference_images: int = LOF_REFERENCE_IMAGES):
        self.noise_fraction = noise_fraction
        self.lof_reference_images = lof_reference_images
        self.pool_max_patches = pool_max_patches
        self.coreset_fraction = coreset_fraction
        self.lof_neighbours = lof_neighbours
        self.projection_dim = projection_dim
        self.seed = seed

    @classmethod
    def from_config(cls, config: FunADConfig, local_net: LocalNet) -> Self:
        return cls(seed=config.seed)

    def fit(self, features: MethodFeatures, image_ids: np.ndarray | None = None) -> Self:
        indices = features.indices(image_ids)
        if len(indices) > self.lof_reference_images:
            return self._fit_sampled(features, indices)
        patches = features.take(indices)
        factors = positional_outlier_factors(patches, self.lof_neighbours)
        self.kept_ = keep_inliers(factors, self.noise_fraction)
        # The (image, position) rows that survive denoising, capped to a uniform pool for the coreset.
        rows = np.flatnonzero(self.kept_)
        if self.pool_max_patches is not None and len(rows) > self.pool_max_patches:
            rows = np.sort(np.random.default_rng(self.seed).choice(rows, self.pool_max_patches, replace=False))
        candidates = patches.reshape(-1, patches.shape[-1])[torch.from_numpy(rows)]
        candidate_images = indices[rows // features.num_patches]
        candidate_factors = factors.ravel()[rows]
        return self._bank_from(candidates, candidate_images, candidate_factors)

    def _fit_sampled(self, features: MethodFeatures, indices: np.ndarray) -> Self:
        """Beyond ``lof_reference_images`` images: each position's LOF is fitted on that many images drawn at
        random, a uniform pool of ``pool_max_patches`` patches is scored against it, and a pooled patch is
        dropped when its factor exceeds the highest one the reference images keep at its position.

        The exact rule (every image against every other at each position) costs images^2 per position and
        reads every patch at once; ``kept_`` (per image and position) is not recorded here.
        """
        rng = np.random.default_rng(self.seed)
        reference_ids = np.sort(rng.choice(indices, self.lof_reference_images, replace=False))
        reference = features.take(reference_ids)
        count = min(self.pool_max_patches or len(indices) * features.num_patches, len(indices) * features.num_patches)
        images, positions = sample_rows(indices, features.num_patches, count, rng)
        pool = read_rows(features, images, positions)
        factors = np.empty(len(pool))
        kept = np.zeros(len(pool), dtype=bool)
        from sklearn.neighbors import LocalOutlierFactor  # as in positional_outlier_factors: only when fitting

        lof = LocalOutlierFactor(n_neighbors=min(self.lof_neighbours, len(reference) - 1), novelty=True)
        for position in np.unique(positions):
            lof.fit(reference[:, position].numpy())
            reference_factors = -lof.negative_outlier_factor_
            cut = reference_factors[keep_inliers(reference_factors[:, None], self.noise_fraction)[:, 0]].max()
            here = positions == position
            # A reference image's own patch keeps its fitted factor: scored anew it would be its own neighbour.
            slot = np.searchsorted(reference_ids, images[here]).clip(max=len(reference_ids) - 1)
            own = reference_ids[slot] == images[here]
            factors[here] = np.where(own, reference_factors[slot], 0.0)
            others = np.flatnonzero(here)[~own]
            if len(others):
                factors[others] = -lof.score_samples(pool[others].numpy())
            kept[here] = factors[here] <= cut
        return self._bank_from(pool[torch.from_numpy(kept)], images[kept], factors[kept])

    def _bank_from(self, candidates: torch.Tensor, candidate_images: np.ndarray,
                   candidate_factors: np.ndarray) -> Self:
        """The coreset of the denoised ``candidates`` as the bank, each entry weighted by its outlier factor."""
        chosen = greedy_coreset(candidates, coreset_size(len(candidates), self.coreset_fraction),
                                projection_dim=self.projection_dim, seed=self.seed)
        self.bank_ = PatchBank(candidates[chosen], candidate_images[chosen])
        self.weights_ = candidate_factors[chosen]
        return self

    def _weighted_nearest(self, distances: np.ndarray, nearest: np.ndarray) -> np.ndarray:
        """The distance to the nearest bank entry times that entry's outlier factor."""
        weighted: np.ndarray = distances * self.weights_[nearest]
        return weighted

    def score_patches(self, patches: torch.Tensor) -> torch.Tensor:
        """The maps' patch scores: the search as it is (only image scores are searched again, in :meth:`score`)."""
        return torch.from_numpy(self._searched(patches)[0]).to(patches.device)

    def score(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        patch_scores, distances = self._searched(patches)
        image_scores = self._searched_exactly(patches.reshape(-1, patches.shape[-1]), patch_scores, distances)
        return (torch.from_numpy(patch_scores).to(patches.device),
                torch.from_numpy(image_scores.max(axis=1)).to(patches.device))

    def _searched(self, patches: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """``[B, K]`` weighted patch scores and the distances to the nearest entries found (the bank's index)."""
        distances, nearest = self.bank_.search(patches.reshape(-1, patches.shape[-1]))
        shape = patches.shape[:-1]
        return self._weighted_nearest(distances[:, 0], nearest[:, 0]).reshape(shape), distances[:, 0].reshape(shape)

    def score_training_images(self, features: MethodFeatures) -> np.ndarray:
        def patch_scores(image: int) -> np.ndarray:
            queries = features.take([image])[0]
            distances, nearest = self.bank_.nearest_from_other_images(queries, image)
            scores = self._weighted_nearest(distances, nearest)[None]
            searched: np.ndarray = self._searched_exactly(queries, scores, distances[None], image)[0]
            return searched

        return highest_patch_scores(features, patch_scores)

    def _searched_exactly(self, queries: torch.Tensor, scores: np.ndarray, distances: np.ndarray,
                          own_image: int | None = None) -> np.ndarray:
        """``[B, K]`` patch ``scores`` (at the approximate nearest entries' ``distances``) with each image's highest
        searched again exhaustively (:func:`~funad.inference.patch_bank.highest_searched_exactly`). A missed
        entry may weigh more than the one found, so a patch's exact score is bounded by its found distance
        times the largest weight. ``own_image``: its entries left out."""
        if not self.bank_.index.approximate:
            return scores

        def score_exactly(rows: np.ndarray) -> np.ndarray:
            if own_image is None:
                distances, nearest = self.bank_.search(queries[rows], exact=True)
                return self._weighted_nearest(distances[:, 0], nearest[:, 0])
            return self._weighted_nearest(*self.bank_.nearest_from_other_images(queries[rows], own_image, exact=True))

        return highest_searched_exactly(scores, score_exactly, distances * self.weights_.max())

    def settings(self) -> dict[str, Any]:
        return {"noise_fraction": self.noise_fraction, "coreset_fraction": self.coreset_fraction,
                "lof_neighbours": self.lof_neighbours, "projection_dim": self.projection_dim, "seed": self.seed,
                "pool_max_patches": self.pool_max_patches, "lof_reference_images": self.lof_reference_images}

    def state_dict(self) -> ScorerState:
        return ScorerState(self.bank_.tensors() | {"weights": torch.from_numpy(self.weights_)}, self.settings())

    @classmethod
    def from_state(cls, state: ScorerState, local_net: LocalNet) -> Self:
        scorer = cls(**state.settings)
        bank = dict(state.tensors)
        scorer.weights_ = bank.pop("weights").numpy()
        scorer.bank_ = PatchBank.from_tensors(bank)
        return scorer
