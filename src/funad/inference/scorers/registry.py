"""Scorers by name. Importing the implementation modules below registers them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from funad.baselines import patchcore, softpatch  # noqa: F401 (registration)
from funad.inference.scorers import blend, knn, local_net  # noqa: F401 (registration)
from funad.inference.scorers.base import SCORERS, PatchScorer, ScorerState

if TYPE_CHECKING:
    from funad.config import FunADConfig
    from funad.method.local_net import LocalNet


def list_scorers() -> list[str]:
    return SCORERS.names()


def create_scorer(config: FunADConfig, trained: LocalNet) -> PatchScorer:
    """The (unfitted) scorer ``config.scorer`` names, for a FUN-AD model with the Local-Net ``trained``."""
    return SCORERS[config.scorer].from_config(config, trained)


def training_views(config: FunADConfig) -> tuple[str, ...]:
    """The poses of the training images the scorer ``config.scorer`` names reads when fitted (FunAD extracts them)."""
    return SCORERS[config.scorer].training_views(config)


def scorer_from_state(name: str, state: ScorerState, trained: LocalNet) -> PatchScorer:
    """A fitted scorer as saved by its ``state_dict()``, for a model with the Local-Net ``trained``."""
    return SCORERS[name].from_state(state, trained)
