"""Nearest-neighbour baselines run on the same cached features as FUN-AD: PatchCore and SoftPatch."""

from funad.baselines.patchcore import PatchCore, greedy_coreset
from funad.baselines.softpatch import SoftPatch

__all__ = ["PatchCore", "SoftPatch", "greedy_coreset"]
