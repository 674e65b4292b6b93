"""Exact nearest-neighbour search with faiss's flat L2 index: the one place funad calls faiss.

Exhaustive, so it finds the same neighbours as a full distance matrix; on CPU it is about 2.5x
faster than a torch matmul because it fuses the arg-min into its blocked BLAS pass instead of
materialising the whole distance matrix (docs/speed.md).
"""

from __future__ import annotations

import faiss
import numpy as np
import torch


def as_float32_array(points: torch.Tensor | np.ndarray) -> np.ndarray:
    """C-contiguous float32 numpy array (what faiss reads) of a tensor on any device, or of an array."""
    if isinstance(points, torch.Tensor):
        points = points.detach().float().cpu().numpy()
    return np.ascontiguousarray(points, dtype=np.float32)


class FlatIndex:
    """A fixed set of keys ``[M, D]``, searched exhaustively."""

    def __init__(self, keys: torch.Tensor | np.ndarray):
        self.keys = as_float32_array(keys)
        self._index = faiss.IndexFlatL2(self.keys.shape[1])
        self._index.add(self.keys)

    def __len__(self) -> int:
        return len(self.keys)

    def search(self, queries: torch.Tensor | np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Squared L2 distances (clamped at 0 against rounding) to, and indices of, the ``k`` nearest keys.

        Both ``[Q, k]``.
        """
        distances, indices = self._index.search(as_float32_array(queries), k)
        return np.maximum(distances, 0.0), indices
