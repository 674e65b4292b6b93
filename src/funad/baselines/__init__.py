"""Nearest-neighbour baselines run on the same cached features as FUN-AD: PatchCore and SoftPatch."""

from funad.baselines.patchcore import PatchCore
from funad.baselines.softpatch import SoftPatch

__all__ = ["PatchCore", "SoftPatch"]
