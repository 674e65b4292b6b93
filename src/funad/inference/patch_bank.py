"""A bank of patch features that nearest-neighbour scorers search: each patch's distance to the bank."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from funad.features.containers import MethodFeatures
from funad.inference.search import APPROXIMATE_MIN_KEYS, nearest_index


class PatchBank:
    """Banked patches ``[M, D]`` and, where known, the training image each came from (``image_ids``).

    Distances are Euclidean (the square root of faiss's squared distances). A large bank is
    searched approximately (:func:`funad.inference.search.nearest_index`) unless ``exact``: for
    a bank searched only a few times, the approximate index's training costs more than it saves.
    """

    def __init__(self, patches: torch.Tensor, image_ids: np.ndarray | None = None, *, exact: bool = False):
        self.patches = patches.float().contiguous()
        self.image_ids = None if image_ids is None else np.asarray(image_ids, dtype=np.int64)
        self.index = nearest_index(self.patches, approximate_min_keys=None if exact else APPROXIMATE_MIN_KEYS)
        # Counted once: per query image it would cost O(entries) each, O(images x entries) in all.
        self._entries_per_image = (np.zeros(0, dtype=np.int64) if self.image_ids is None
                                   else np.bincount(self.image_ids))

    def __len__(self) -> int:
        return len(self.index)

    def search(self, queries: torch.Tensor | np.ndarray, k: int = 1, *,
               exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Euclidean distances to, and indices of, the ``k`` nearest bank entries: ``[Q, k]`` each.

        ``exact``: searched exhaustively even where the bank's index is approximate.
        """
        squared, indices = (self.index.search_exactly if exact else self.index.search)(queries, k)
        return np.sqrt(squared), indices

    def entries_of(self, image: int) -> int:
        """How many entries came from training image ``image`` (0 for a bank that does not know)."""
        return int(self._entries_per_image[image]) if 0 <= image < len(self._entries_per_image) else 0

    def search_past_own(self, queries: torch.Tensor | np.ndarray, k: int, image: int | np.ndarray, *,
                        exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Each query's ``k`` nearest entries besides those of its own training image: ``[Q, k + own]`` distances
        (the own image's entries at ``inf``; fewer columns where the bank is smaller) and indices, searched
        ``own`` past ``k``, the most entries ``image`` has (one training image for every query, or one per query).

        A banked training image would otherwise find itself and score ~0; without its own entries it
        scores as a new image would. ``exact``: as in :meth:`search`.
        """
        if self.image_ids is None:
            raise RuntimeError("this bank does not know which image each entry came from")
        images = np.asarray(image)
        own = self.entries_of(int(images)) if images.ndim == 0 else int(self._entries_per_image.max(initial=0))
        distances, hits = self.search(queries, min(len(self), k + own), exact=exact)
        return np.where(self.image_ids[hits] == images.reshape(-1, 1), np.inf, distances), hits

    def nearest_from_other_images(self, queries: torch.Tensor | np.ndarray, image: int | np.ndarray, *,
                                  exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Distance to, and index of, each query's nearest entry that does not come from its image: ``[Q]``
        (:meth:`search_past_own`; ``inf`` where the bank holds no other image's entry)."""
        distances, hits = self.search_past_own(queries, 1, image, exact=exact)
        nearest = np.argmin(distances, axis=1)
        rows = np.arange(len(distances))
        return distances[rows, nearest], hits[rows, nearest]

    def tensors(self) -> dict[str, torch.Tensor]:
        """The bank as plain tensors (see :meth:`from_tensors`)."""
        tensors = {"patches": self.patches}
        if self.image_ids is not None:
            tensors["image_ids"] = torch.from_numpy(self.image_ids)
        return tensors

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> PatchBank:
        image_ids = tensors.get("image_ids")
        return cls(tensors["patches"], None if image_ids is None else image_ids.numpy())


#: Patches per image searched again exhaustively at a time by :func:`highest_searched_exactly`.
EXACT_RESCORED_PATCHES = 8


def highest_searched_exactly(scores: np.ndarray, score_exactly: Callable[[np.ndarray], np.ndarray],
                             bounds: np.ndarray | None = None) -> np.ndarray:
    """``[B, K]`` patch ``scores`` from an approximate search, each image's highest ones replaced by
    ``score_exactly(flat indices into the B x K patches)`` (an exhaustive search's scores).

    An image's score is its highest patch score, and an approximate index misses most often there (a
    defect is far from every entry, where its cells fit worst). Patches are searched again,
    ``EXACT_RESCORED_PATCHES`` per image at a time in the order of ``bounds``, until no unsearched
    patch's bound exceeds the image's highest exact score. ``bounds``: upper bounds of each patch's
    exact score; None: the approximate scores themselves, which bound a distance to the nearest entry
    (an approximate search never finds a nearer one). With valid bounds every image's highest score
    is the exhaustive search's, what the exported ONNX graph computes; with ``bounds`` that are not
    (a corroborated score, where a farther entry with a lower floor may stand in for a missed one), a
    patch whose exact score exceeds its approximate one can go unsearched.
    """
    bounds = scores if bounds is None else bounds
    scores, settled = scores.copy(), np.zeros(scores.shape, dtype=bool)
    while True:
        pending = np.where(settled, -np.inf, bounds)
        highest_exact = np.where(settled, scores, -np.inf).max(axis=1)
        images = np.flatnonzero(pending.max(axis=1) > highest_exact)
        if not len(images):
            return scores
        columns = np.argsort(-pending[images], axis=1, kind="stable")[:, :EXACT_RESCORED_PATCHES]
        rows = np.repeat(images, columns.shape[1])
        columns = columns.ravel()
        unsettled = ~settled[rows, columns]
        rows, columns = rows[unsettled], columns[unsettled]
        scores[rows, columns] = score_exactly(rows * scores.shape[1] + columns)
        settled[rows, columns] = True


def scaled_pool_cap(cap: int, patches_per_image: int, stated_patches_per_image: int) -> int:
    """A pool cap stated for images of ``stated_patches_per_image`` patches, for images of ``patches_per_image``:
    the pool keeps the same share of the training patches (rounded down)."""
    return cap * patches_per_image // stated_patches_per_image


def sample_patches(features: MethodFeatures, image_ids: np.ndarray | None, count: int | None,
                   rng: np.random.Generator) -> tuple[torch.Tensor, np.ndarray]:
    """At most ``count`` patches drawn uniformly from the chosen images (all when None), and each patch's image.

    Only the drawn rows are read, so memory grows with ``count``, not with the number of images.
    """
    indices = features.indices(image_ids)
    if count is None or count >= len(indices) * features.num_patches:
        return all_patches(features, indices)
    images, positions = sample_rows(indices, features.num_patches, count, rng)
    return read_rows(features, images, positions), images


def sample_rows(image_ids: np.ndarray, num_patches: int, count: int,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``count`` distinct (image, position) pairs drawn uniformly, sorted by image: ``(images, positions)``."""
    rows = np.sort(rng.choice(len(image_ids) * num_patches, size=count, replace=False))
    return image_ids[rows // num_patches], rows % num_patches


def read_rows(features: MethodFeatures, images: np.ndarray, positions: np.ndarray) -> torch.Tensor:
    """float32 ``[len(images), D]``: patch ``positions[i]`` of image ``images[i]``, each image read once."""
    patches = np.empty((len(images), features.dim), dtype=np.float32)
    # Grouped by one sort: a mask per image would cost (images) x (rows), ~4e9 tests for 60 000 rows of 60 000 images.
    order = np.argsort(images, kind="stable")
    unique, starts = np.unique(images[order], return_index=True)
    for image, group in zip(unique, np.split(order, starts[1:])):
        patches[group] = features.arrays[image][positions[group]]
    return torch.from_numpy(patches)


def all_patches(features: MethodFeatures, indices: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """Every patch of the images ``indices`` as float32 ``[n * K, D]``, and each patch's image."""
    return features.take(indices).reshape(-1, features.dim), np.repeat(indices, features.num_patches)
