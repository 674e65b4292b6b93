"""Nearest-neighbour search with faiss: the one place funad calls it.

:class:`FlatIndex` is exhaustive, so it finds the same neighbours as a full distance matrix; on
CPU it is about 2.5x faster than a torch matmul because it fuses the arg-min into its blocked
BLAS pass instead of materialising the whole distance matrix (docs/speed.md). Its cost grows
with the number of keys; :class:`IVFIndex` searches only the keys of the ``nprobe`` k-means
cells nearest each query. :func:`nearest_index` picks one by the number of keys (docs/scale.md).
"""

from __future__ import annotations

import math

import faiss
import numpy as np
import torch

#: Banks of more keys than this get an approximate (IVF) index. Measured on DINOv2 patch features
#: (benchmarks/approximate_search.py, docs/scale.md): from 2 048 keys up IVF at nprobe 16 searched
#: 3-12x faster than exact at recall@1 >= 0.9995; its k-means training (1.5 s at 6 144 keys) is
#: repaid within one pass of training scores. Smaller banks stay exact.
APPROXIMATE_MIN_KEYS = 4096
#: k-means cells of an IVF index per square root of its keys (faiss's rule of thumb is 4-16).
IVF_CELLS_PER_SQRT_KEYS = 4
#: Cells searched per query; recall@1 against exact search is in docs/scale.md. 8, not 16: at the knn bank of the
#: time (a 10 % coreset, about 6 000 entries on bottle; 20 % since) recall@1 was 0.9985 against 1.0000, the dev sets'
#: AUROC moved by at most 0.04 points, and the search, a tenth of `predict`'s CPU time at 16, costs half
#: (docs/speed.md).
IVF_NPROBE = 8


def as_float32_array(points: torch.Tensor | np.ndarray) -> np.ndarray:
    """C-contiguous float32 numpy array (what faiss reads) of a tensor on any device, or of an array."""
    if isinstance(points, torch.Tensor):
        points = points.detach().float().cpu().numpy()
    return np.ascontiguousarray(points, dtype=np.float32)


class FlatIndex:
    """A fixed set of keys ``[M, D]``, searched exhaustively."""

    #: Whether :meth:`search` may miss a nearer key than those it answers.
    approximate = False

    def __init__(self, keys: torch.Tensor | np.ndarray):
        # Searched in place by faiss.knn, the search an IndexFlatL2 runs, without the copy such an index keeps
        # (at magnetic tile's vouching pool, 826 560 patches in four poses, 1.27 GB).
        self.keys = as_float32_array(keys)

    def __len__(self) -> int:
        return len(self.keys)

    def search(self, queries: torch.Tensor | np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Squared L2 distances (clamped at 0 against rounding) to, and indices of, the ``k`` nearest keys.

        Both ``[Q, k]``; ``k`` must not exceed the number of keys.
        """
        return self.search_exactly(queries, k)

    def search_exactly(self, queries: torch.Tensor | np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`search`, always exhaustive: the few answers that matter most, checked."""
        distances, indices = faiss.knn(as_float32_array(queries), self.keys, k)
        return np.maximum(distances, 0.0), indices


class IVFIndex(FlatIndex):
    """Keys ``[M, D]`` in ``cells`` k-means cells (faiss ``IndexIVFFlat``); a query searches the ``nprobe`` nearest.

    The k-means is seeded, so the same keys give the same index and the same answers. A query
    whose probed cells hold fewer than ``k`` keys is searched exhaustively instead, so every
    answer has ``k`` valid neighbours.
    """

    approximate = True

    def __init__(self, keys: torch.Tensor | np.ndarray, *, cells: int | None = None, nprobe: int = IVF_NPROBE,
                 seed: int = 0):
        super().__init__(keys)
        # faiss's k-means wants at least 39 training points per cell.
        cells = cells or max(1, min(round(IVF_CELLS_PER_SQRT_KEYS * math.sqrt(len(self.keys))), len(self.keys) // 39))
        quantizer = faiss.IndexFlatL2(self.keys.shape[1])
        index = faiss.IndexIVFFlat(quantizer, self.keys.shape[1], cells)
        index.cp.seed = seed  # k-means initialisation and training subsample
        index.train(self.keys)
        index.add(self.keys)
        index.nprobe = nprobe
        self._quantizer = quantizer  # the IVF index does not own it: keep it alive as long as the index
        self._index = index

    @property
    def nprobe(self) -> int:
        """Cells searched per query (the trade between speed and recall that benchmarks/approximate_search.py
        measures; set it on a built index to compare without training again)."""
        return int(self._index.nprobe)

    @nprobe.setter
    def nprobe(self, cells: int) -> None:
        self._index.nprobe = cells

    def search(self, queries: torch.Tensor | np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        queries = as_float32_array(queries)
        distances, indices = self._index.search(queries, k)
        distances = np.maximum(distances, 0.0)
        short = np.flatnonzero(indices[:, -1] < 0)
        if len(short):
            distances[short], indices[short] = self.search_exactly(queries[short], k)
        return distances, indices


def nearest_index(keys: torch.Tensor | np.ndarray, *,
                  approximate_min_keys: int | None = APPROXIMATE_MIN_KEYS) -> FlatIndex:
    """An exact index of ``keys``, or an :class:`IVFIndex` when there are more than ``approximate_min_keys``.

    ``approximate_min_keys=None`` keeps search exact at any size.
    """
    if approximate_min_keys is not None and len(keys) > approximate_min_keys:
        return IVFIndex(keys)
    return FlatIndex(keys)
