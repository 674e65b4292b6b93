"""Patches -> their coordinates along the top principal directions of the training patches.

The knn scorer can compare patches there (``NearestNeighbourScorer(components=...)``,
``--knn-components``): a faster fit and search and a smaller bank, for some accuracy (measured in
docs/accuracy.md, "Principal directions"). A torch module, so that the exported ONNX graph carries it unchanged.
"""

from __future__ import annotations

import torch
from sklearn.decomposition import PCA
from torch import nn

#: Most patches a projection is fitted on (the default pool of at most 100 000 is used whole).
MAX_FIT_ROWS = 200_000


class PrincipalProjection(nn.Module):
    """``(patches - mean) @ components.T``: ``[..., D]`` -> ``[..., C]``; :meth:`fit` finds ``mean`` and
    ``components`` (orthonormal rows, largest variance first) from ``[N, D]`` patches."""

    mean: torch.Tensor  # buffers: saved with the scorer and constants of an exported graph
    components: torch.Tensor

    def __init__(self, mean: torch.Tensor, components: torch.Tensor):
        super().__init__()
        if components.ndim != 2 or mean.shape != (components.shape[1],):
            raise ValueError(f"a projection needs mean [D] and components [C, D]; got {tuple(mean.shape)} and "
                             f"{tuple(components.shape)}")
        self.register_buffer("mean", mean.float().contiguous())
        self.register_buffer("components", components.float().contiguous())

    @classmethod
    def fit(cls, patches: torch.Tensor, count: int) -> PrincipalProjection:
        """The top ``count`` principal directions of ``patches`` (at most their dimension and number), from at
        most :data:`MAX_FIT_ROWS` of them, evenly spaced."""
        # An uncapped pool can hold millions of patches: a few hundred thousand fix 384 directions as well.
        patches = patches[::-(-len(patches) // MAX_FIT_ROWS)]
        # The full SVD is exact and deterministic (sklearn fixes the directions' signs); 100 000 x 384 take ~2 s.
        pca = PCA(min(count, *patches.shape), svd_solver="full").fit(patches.float().numpy())
        return cls(torch.from_numpy(pca.mean_), torch.from_numpy(pca.components_))

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        # On the patches' device (a GPU's features), as the knn's scores are.
        return (patches.float() - self.mean.to(patches.device)) @ self.components.to(patches.device).T

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"projection_mean": self.mean, "projection_components": self.components}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> PrincipalProjection | None:
        """The projection :meth:`tensors` saved (popped from ``tensors``), or None where none was."""
        if "projection_components" not in tensors:
            return None
        return cls(tensors.pop("projection_mean"), tensors.pop("projection_components"))
