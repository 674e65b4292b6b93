"""FUN-AD's default scorer: nearest-neighbour distance to the patches of the images the method trusts.

FunAD fits it on its ``trusted_images`` (the training images the trained Local-Net scores
lowest); the bank is a greedy coreset of their patches, as PatchCore's. Fitted on every
training image it is the plain contaminated baseline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Self

import numpy as np
import torch

from funad.features.containers import MethodFeatures
from funad.inference.coreset import PROJECTION_DIM, coreset_size, greedy_coreset
from funad.inference.patch_bank import PatchBank, all_patches
from funad.inference.scorers.base import PatchScorer, ScorerState, leave_own_image_out, register_scorer

if TYPE_CHECKING:
    from funad.config import FunADConfig
    from funad.method.local_net import LocalNet


@register_scorer("knn")
class NearestNeighbourScorer(PatchScorer):
    """``fit(features, image_ids)`` banks a share of the chosen images' patches; patch score = distance to the bank.

    ``sampling="coreset"`` keeps a greedy k-center coreset of all their patches (covers rare
    normal patterns with few entries), selected after a random projection to ``projection_dim``
    dimensions; ``"random"`` keeps a random share of each image's patches.
    """

    score_range = None

    def __init__(self, patch_fraction: float = 0.01, seed: int = 0,
                 sampling: Literal["coreset", "random"] = "coreset", projection_dim: int | None = PROJECTION_DIM):
        self.patch_fraction = patch_fraction
        self.seed = seed
        self.sampling = sampling
        self.projection_dim = projection_dim

    @classmethod
    def from_config(cls, config: FunADConfig, local_net: LocalNet) -> Self:
        return cls(config.knn_patch_fraction, config.seed)

    def fit(self, features: MethodFeatures, image_ids: np.ndarray | None = None) -> Self:
        if self.sampling == "coreset":
            patches, patch_images = all_patches(features, image_ids)
            chosen = greedy_coreset(patches, coreset_size(len(patches), self.patch_fraction),
                                    projection_dim=self.projection_dim, seed=self.seed)
            self.bank_ = PatchBank(patches[chosen], patch_images[chosen])
            return self
        indices = np.arange(len(features)) if image_ids is None else np.asarray(image_ids)
        rng = np.random.default_rng(self.seed)
        per_image = min(features.num_patches, coreset_size(features.num_patches, self.patch_fraction))
        positions = [np.sort(rng.choice(features.num_patches, per_image, replace=False)) for _ in indices]
        bank = features.take_rows(indices, positions).reshape(-1, features.dim)
        self.bank_ = PatchBank(bank, np.repeat(indices, per_image))
        return self

    def score_patches(self, patches: torch.Tensor) -> torch.Tensor:
        return self.bank_.distances(patches)

    def score_training_images(self, features: MethodFeatures) -> np.ndarray:
        def patch_scores(image: int) -> np.ndarray:
            return self.bank_.nearest_from_other_images(features.take([image])[0], image)[0]

        return leave_own_image_out(features, patch_scores)

    def settings(self) -> dict[str, Any]:
        """The constructor's arguments, as JSON."""
        return {"patch_fraction": self.patch_fraction, "seed": self.seed, "sampling": self.sampling,
                "projection_dim": self.projection_dim}

    def state_dict(self) -> ScorerState:
        return ScorerState(self.bank_.tensors(), self.settings())

    @classmethod
    def from_state(cls, state: ScorerState, local_net: LocalNet) -> Self:
        scorer = cls(**state.settings)
        scorer.bank_ = PatchBank.from_tensors(state.tensors)
        return scorer
