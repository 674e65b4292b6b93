"""Feature containers: what backbones produce and what the method trains and scores on.

Plain arrays and tensors only (no image decoding, no data loading), so that the method, the
scorers and the baselines depend on this module and not on the extraction machinery.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeAlias

import numpy as np
import torch

if TYPE_CHECKING:
    from funad.features.cache import CachedPatches

Level = Literal["patch", "image"]
#: One image's ``[K, D]`` patches: in memory, or in the feature cache (read on access).
PatchArray: TypeAlias = "np.ndarray | CachedPatches"


@dataclass
class FeatureBatch:
    """A backbone's output for a batch of images."""

    patches: torch.Tensor  # [B, K, D], row-major on the backbone's grid
    global_: torch.Tensor  # [B, G]

    def method_patches(self, level: Level) -> torch.Tensor:
        """``[B, K, D]`` the method works on: the patches, or (``"image"``) the global vector as K = 1."""
        return self.global_[:, None, :] if level == "image" else self.patches


@dataclass
class FeatureSet:
    """Per-image features (fp16, possibly memory-mapped) for a list of images.

    ``patches[i]`` is ``[K, D]`` on ``grid``; ``globals_[i]`` is ``[G]``. ``views``: the patches
    of the same images in other poses (:data:`funad.data.preprocessing.VIEWS`), by view, row for
    row (``views[v][i]`` is image i turned or mirrored), where a scorer asked for them; a view may
    hold only the first images (the real ones, before FUN-AD*'s synthetic anomalies).
    """

    paths: list[Path]
    patches: list[PatchArray]
    globals_: list[np.ndarray]
    grid: tuple[int, int]
    failures: dict[Path, str] = field(default_factory=dict)
    views: dict[str, list[PatchArray]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.paths)

    def method_features(self, level: Level) -> MethodFeatures:
        if level == "image":  # a view of the whole-image vector is not a pose of its patches
            return MethodFeatures([g[None, :] for g in self.globals_])
        return MethodFeatures(self.patches, {view: MethodFeatures(arrays) for view, arrays in self.views.items()})

    def subset(self, paths: Sequence[Path]) -> FeatureSet:
        """The features of ``paths`` (each must be in this set), in that order."""
        rows = {path: row for row, path in enumerate(self.paths)}
        chosen = [rows[path] for path in paths]
        return FeatureSet(list(paths), [self.patches[r] for r in chosen], [self.globals_[r] for r in chosen], self.grid,
                          views={view: [arrays[r] for r in chosen] for view, arrays in self.views.items()})


class MethodFeatures:
    """The features the method trains on: ``[N, K, D]`` (K = 1 in image mode), read lazily.

    ``views``: the same images in other poses, by view (see :class:`FeatureSet`); a view may hold
    only the first images (the real ones, before FUN-AD*'s synthetic anomalies).
    """

    def __init__(self, arrays: Sequence[PatchArray], views: dict[str, MethodFeatures] | None = None):
        self.arrays = arrays
        self.views = views or {}
        self.num_patches: int = arrays[0].shape[0] if arrays else 0
        self.dim: int = arrays[0].shape[1] if arrays else 0

    def __len__(self) -> int:
        return len(self.arrays)

    def indices(self, image_ids: Sequence[int] | np.ndarray | None) -> np.ndarray:
        """``image_ids`` as an index array, or every image's index when None (a scorer fitted on all)."""
        return np.arange(len(self)) if image_ids is None else np.asarray(image_ids)

    def head(self, count: int) -> MethodFeatures:
        """The first ``count`` images (FUN-AD*'s real images come before its synthetic ones)."""
        return MethodFeatures(self.arrays[:count], {view: posed.head(count) for view, posed in self.views.items()})

    def take(self, indices: Sequence[int] | np.ndarray, positions: np.ndarray | None = None) -> torch.Tensor:
        """float32 ``[len(indices), P, D]``; ``positions`` selects the same patches in every image."""
        return self.take_rows(indices, [positions] * len(indices))

    def random_positions(self, count: int, per_image: int, rng: np.random.Generator) -> list[np.ndarray | None]:
        """For each of ``count`` images, ``per_image`` of its positions drawn at random (sorted), for
        :meth:`take_rows`; None (every position) for each when ``per_image`` covers them all."""
        if per_image >= self.num_patches:
            return [None] * count
        return [np.sort(rng.choice(self.num_patches, per_image, replace=False)) for _ in range(count)]

    def take_rows(self, indices: Sequence[int] | np.ndarray, positions: Sequence[np.ndarray | None]) -> torch.Tensor:
        """float32 ``[len(indices), P, D]`` with each image's own ``positions`` (all of the same length)."""
        rows = [np.asarray(self.arrays[i]) if kept is None else self.arrays[i][kept]
                for i, kept in zip(indices, positions)]
        if not rows:  # a rank's share of a small memory bank may be empty
            return torch.empty((0, 0, self.dim))
        return torch.from_numpy(np.stack(rows).astype(np.float32))
