"""The knn scorer and the paper's Local-Net together: each in units of its own training images' scores, averaged.

The two score on different scales (a feature distance; a probability in (0, 1)), so neither can
simply be added to the other. Each part's scores are standardised by its training images' image
scores, label-free: ``(s - median) / MAD``, one affine map per part for its image scores and its
patch scores alike; the blend is the mean of the two standardised scores. Maps blend the parts'
maps, image scores the parts' image scores (the knn's image and map floors differ, see
:mod:`funad.inference.scorers.knn`), so an image's score need not be its map's highest value.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any, Self

import numpy as np
import torch

from funad.features.containers import MethodFeatures
from funad.inference.scorers.base import PatchScorer, ScorerState, register_scorer
from funad.inference.scorers.knn import NearestNeighbourScorer
from funad.inference.scorers.local_net import LocalNetScorer
from funad.method.threshold import median_and_deviation
from funad.utils.tensors import under_prefix, with_prefix

if TYPE_CHECKING:
    from funad.config import FunADConfig
    from funad.method.local_net import LocalNet

_KNN = "knn."


@register_scorer("blend")
class BlendScorer(PatchScorer):
    """``knn`` and ``local_net`` (the model's scorers of those names), standardised and averaged."""

    score_range = None

    def __init__(self, knn: NearestNeighbourScorer, local_net: LocalNetScorer):
        self.knn = knn
        self.local_net = local_net
        # The parts' training scores of the features fit saw: FunAD asks for them next (its threshold), and the
        # knn's leave-own-image-out pass is the costly part of a fit, so it is not run twice.
        self._fitted_scores: weakref.WeakKeyDictionary[MethodFeatures, list[np.ndarray]] = weakref.WeakKeyDictionary()

    @classmethod
    def from_config(cls, config: FunADConfig, local_net: LocalNet) -> Self:
        return cls(NearestNeighbourScorer.from_config(config, local_net), LocalNetScorer(local_net))

    @classmethod
    def training_views(cls, config: FunADConfig) -> tuple[str, ...]:
        return NearestNeighbourScorer.training_views(config)

    def _parts(self) -> tuple[PatchScorer, PatchScorer]:
        return self.knn, self.local_net

    def fit(self, features: MethodFeatures, image_ids: np.ndarray | None = None) -> Self:
        for part in self._parts():
            part.fit(features, image_ids)
        trained = [part.score_training_images(features) for part in self._parts()]
        fitted = [scores if image_ids is None else scores[np.asarray(image_ids)] for scores in trained]
        self.centres_, self.scales_ = (np.array(values, dtype=np.float64)
                                       for values in zip(*map(robust_standardisation, fitted)))
        self._fitted_scores = weakref.WeakKeyDictionary({features: trained})
        return self

    def _blend(self, part_scores: list[torch.Tensor] | list[np.ndarray]) -> Any:
        """The mean of the parts' standardised scores (tensors or arrays, in the parts' order)."""
        standardised = [(scores - centre) / scale
                        for scores, centre, scale in zip(part_scores, self.centres_, self.scales_)]
        return sum(standardised[1:], standardised[0]) / len(standardised)

    def score_patches(self, patches: torch.Tensor) -> torch.Tensor:
        # The parts' patch scores alone: score() would also search each image's highest patches again exactly.
        blended: torch.Tensor = self._blend([part.score_patches(patches).float() for part in self._parts()])
        return blended.float()

    def score(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps, images = zip(*(part.score(patches) for part in self._parts()))
        return self._blend([m.float() for m in maps]).float(), self._blend([i.float() for i in images]).float()

    def score_training_images(self, features: MethodFeatures) -> np.ndarray:
        trained = self._fitted_scores.get(features)
        if trained is None:
            trained = [part.score_training_images(features) for part in self._parts()]
        result: np.ndarray = self._blend(trained)
        return result

    def state_dict(self) -> ScorerState:
        knn = self.knn.state_dict()
        return ScorerState(with_prefix(_KNN, knn.tensors),
                           {"knn": knn.settings, "centres": self.centres_.tolist(), "scales": self.scales_.tolist()})

    @classmethod
    def from_state(cls, state: ScorerState, local_net: LocalNet) -> Self:
        knn = ScorerState(under_prefix(_KNN, state.tensors), state.settings["knn"])
        scorer = cls(NearestNeighbourScorer.from_state(knn, local_net), LocalNetScorer(local_net))
        scorer.centres_ = np.array(state.settings["centres"], dtype=np.float64)
        scorer.scales_ = np.array(state.settings["scales"], dtype=np.float64)
        return scorer


def robust_standardisation(scores: np.ndarray) -> tuple[float, float]:
    """:func:`~funad.method.threshold.median_and_deviation`, the deviation floored so that identical scores
    cannot divide by zero."""
    centre, spread = median_and_deviation(scores)
    return centre, max(spread, 1e-12 * max(abs(centre), 1.0))
