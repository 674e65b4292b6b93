"""The paper's scorer: the trained Local-Net's patch score s = h(a(p)) in (0, 1)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Self

import numpy as np
import torch

from funad.features.containers import MethodFeatures
from funad.inference.scorers.base import PatchScorer, ScorerState, register_scorer
from funad.method.memory_bank import image_scores

if TYPE_CHECKING:
    from funad.config import FunADConfig
    from funad.method.local_net import LocalNet


@register_scorer("local_net")
class LocalNetScorer(PatchScorer):
    score_range = (0.0, 1.0)

    def __init__(self, local_net: LocalNet):
        self.local_net = local_net

    @classmethod
    def from_config(cls, config: FunADConfig, local_net: LocalNet) -> Self:
        return cls(local_net)

    def fit(self, features: MethodFeatures, image_ids: np.ndarray | None = None) -> Self:
        return self  # FUN-AD's training fitted the Local-Net; the scorer only applies it

    @torch.no_grad()
    def score_patches(self, patches: torch.Tensor) -> torch.Tensor:
        return self.local_net.to(patches.device).score(patches)

    def score_training_images(self, features: MethodFeatures) -> np.ndarray:
        # The Local-Net never stored the training images: their scores are what predict gives them.
        return image_scores(self.local_net, features, next(self.local_net.parameters()).device)

    def state_dict(self) -> ScorerState:
        return ScorerState({}, {})  # nothing beyond the Local-Net, which the model saves itself

    @classmethod
    def from_state(cls, state: ScorerState, local_net: LocalNet) -> Self:
        return cls(local_net)
