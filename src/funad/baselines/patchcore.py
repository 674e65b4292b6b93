"""PatchCore (Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022).

Built from the paper's description on this package's cached patch features:

* memory bank = a greedy k-center coreset of every training patch (10 % by default), selected
  in a Johnson-Lindenstrauss random projection to 128 dimensions (the paper's speed-up);
* patch score = Euclidean distance to the nearest bank entry (faiss; a bank above 4 096 entries is
  searched with an IVF index, each image's highest patches again exhaustively);
* image score = the largest patch score, optionally reweighted as in the paper's eq. 7.

This is the "knn" scorer's bank on every training image, plus the reweighting. Deviations: the
backbone is whatever produced the features (not WRN50 layers 2+3 with 3x3 local averaging), and
the coreset starts from one seeded random patch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Self

import numpy as np
import torch

from funad.config import POOL_MAX_PATCHES
from funad.inference.coreset import PROJECTION_DIM
from funad.inference.scorers.base import register_scorer
from funad.inference.scorers.knn import NearestNeighbourScorer

if TYPE_CHECKING:
    from funad.config import FunADConfig
    from funad.method.local_net import LocalNet

#: b of the paper's reweighting: neighbours of the nearest bank entry that set its local density.
REWEIGHT_NEIGHBOURS = 9


@register_scorer("patchcore")
class PatchCore(NearestNeighbourScorer):
    """PatchCore on precomputed patch features: ``fit(features)``, then ``score_patches(patches)``.

    With ``reweight`` the image score is the paper's reweighted largest patch score (the
    training images' scores are not reweighted).
    """

    def __init__(self, coreset_fraction: float = 0.1, *, projection_dim: int | None = PROJECTION_DIM,
                 reweight: bool = False, seed: int = 0, pool_max_patches: int | None = POOL_MAX_PATCHES):
        super().__init__(coreset_fraction, seed, "coreset", projection_dim, pool_max_patches)
        self.reweight = reweight

    @classmethod
    def from_config(cls, config: FunADConfig, local_net: LocalNet) -> Self:
        return cls(seed=config.seed)

    def image_scores(self, patches: torch.Tensor, patch_scores: torch.Tensor) -> torch.Tensor:
        image_scores = patch_scores.amax(dim=1)
        if not self.reweight:
            return image_scores
        rows = torch.arange(len(patches), device=patches.device)
        worst = patches[rows, patch_scores.argmax(dim=1)].cpu().numpy()
        weights = self._density_weights(worst, image_scores.cpu().numpy())
        return (image_scores.cpu() * torch.from_numpy(weights)).to(patch_scores.device)

    def _density_weights(self, worst: np.ndarray, worst_scores: np.ndarray) -> np.ndarray:
        """The paper's eq. 7 factor 1 - exp(|m_test - m*|) / sum_{m in N_b(m*)} exp(|m_test - m|).

        m_test is each image's highest-scoring patch (``worst``, scoring ``worst_scores``) and m* its
        nearest bank entry; N_b(m*) are the b bank entries nearest to m* (m* itself among them). When
        those neighbours are all far from m_test (m* is an isolated, rare normal) the factor nears 1 and
        the score stands; when they are as close as m* (a dense, well-covered region) it drops to 1 - 1/b.
        Written as 1 - 1 / sum exp(d_m - d*) so that large distances cannot overflow. Searched exhaustively,
        as the image scores are: m* must be the entry the score is the distance to.
        """
        bank = self.bank_.index.keys
        _, nearest = self.bank_.search(worst, exact=True)
        _, neighbourhoods = self.bank_.search(bank[nearest[:, 0]], min(REWEIGHT_NEIGHBOURS, len(self.bank_)),
                                              exact=True)
        distances = np.linalg.norm(bank[neighbourhoods] - worst[:, None, :], axis=2)
        result: np.ndarray = 1.0 - 1.0 / np.exp(distances - worst_scores[:, None]).sum(axis=1)
        return result

    def settings(self) -> dict[str, Any]:
        return {"coreset_fraction": self.patch_fraction, "projection_dim": self.projection_dim,
                "reweight": self.reweight, "seed": self.seed, "pool_max_patches": self.pool_max_patches}
