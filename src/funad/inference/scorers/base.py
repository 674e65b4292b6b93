"""The patch-scorer protocol: what turns ``[B, K, D]`` method features into ``[B, K]`` patch scores.

A scorer is fitted on training features (``fit(features, image_ids)``: the images it may learn
normality from; None for all), scores patches, and saves what it learnt as plain tensors plus
JSON settings (:class:`ScorerState`, no pickle). Both its construction and its restoring get the
model's trained Local-Net, which a scorer may use (the paper's scorer is that network).

A new scorer is one module that subclasses :class:`PatchScorer` with ``@register_scorer("name")``,
plus one import line in :mod:`funad.inference.scorers.registry`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Self, TypeVar

import numpy as np
import torch

from funad.features.containers import MethodFeatures
from funad.utils.registry import Registry

if TYPE_CHECKING:  # the configuration lists the registered scorers, so it imports this package
    from funad.config import FunADConfig
    from funad.method.local_net import LocalNet


@dataclass
class ScorerState:
    """A fitted scorer as safetensors-ready tensors and JSON-ready settings."""

    tensors: dict[str, torch.Tensor]
    settings: dict[str, Any]


class PatchScorer(Protocol):
    """Implementations subclass this protocol to inherit :meth:`image_scores`."""

    #: The name the scorer is registered under (set by :func:`register_scorer`).
    name: ClassVar[str] = ""
    #: The range patch scores lie in, for heatmap colours; None for unbounded distances.
    score_range: ClassVar[tuple[float, float] | None]

    @classmethod
    def from_config(cls, config: FunADConfig, local_net: LocalNet) -> Self:
        """The scorer ``FunAD`` uses with ``scorer=<name>``, given its settings and trained Local-Net."""
        ...

    @classmethod
    def training_views(cls, config: FunADConfig) -> tuple[str, ...]:
        """Poses of the training images (:data:`funad.data.preprocessing.VIEWS`) that the scorer made from
        ``config`` reads in :meth:`fit` from ``features.views``, besides the images themselves; most need none."""
        return ()

    def fit(self, features: MethodFeatures, image_ids: np.ndarray | None = None) -> Self:
        """Learn from the training images ``image_ids`` of ``features`` (None: all of them)."""
        ...

    def score_patches(self, patches: torch.Tensor) -> torch.Tensor:
        """``[B, K, D]`` float32 -> ``[B, K]`` patch scores (higher = more anomalous), on the patches' device."""
        ...

    def image_scores(self, patches: torch.Tensor, patch_scores: torch.Tensor) -> torch.Tensor:
        """``[B]`` image scores; the method's (and most scorers') rule: the highest patch score."""
        return patch_scores.amax(dim=1)

    def score(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, K]`` patch scores (what maps are drawn from) and ``[B]`` image scores, as predict needs both.

        A scorer whose image scores need more than its patch scores may compute both in one pass.
        """
        patch_scores = self.score_patches(patches)
        return patch_scores, self.image_scores(patches, patch_scores)

    def score_training_images(self, features: MethodFeatures) -> np.ndarray:
        """``[N]`` scores of the training images comparable with a new image's score.

        A scorer that stores training patches leaves out each image's own entries (it would
        otherwise find itself); the label-free threshold is set on these scores.
        """
        ...

    def state_dict(self) -> ScorerState:
        """What the scorer learnt in :meth:`fit` (the trained Local-Net is saved beside it)."""
        ...

    @classmethod
    def from_state(cls, state: ScorerState, local_net: LocalNet) -> Self:
        """The fitted scorer :meth:`state_dict` describes, for a model with the Local-Net ``local_net``."""
        ...


SCORERS: Registry[type[PatchScorer]] = Registry("scorer")

ScorerClass = TypeVar("ScorerClass", bound=type[PatchScorer])


def register_scorer(name: str) -> Callable[[ScorerClass], ScorerClass]:
    """Class decorator: make the scorer available as ``FunAD(scorer=name)`` and to saved models."""

    def decorator(scorer_class: ScorerClass) -> ScorerClass:
        scorer_class.name = name
        SCORERS.register(name)(scorer_class)
        return scorer_class

    return decorator


def highest_patch_scores(features: MethodFeatures, score_patches_of: Callable[[int], np.ndarray],
                        images: np.ndarray | None = None) -> np.ndarray:
    """For every training image (or each of ``images``), the largest of the patch scores ``score_patches_of(image)``."""
    chosen = range(len(features)) if images is None else [int(image) for image in images]
    scores = np.empty(len(chosen))
    for row, image in enumerate(chosen):
        scores[row] = score_patches_of(image).max()
    return scores
