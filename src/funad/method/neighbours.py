"""Exact nearest-neighbour search by chunked matrix products, with self-exclusion."""

from __future__ import annotations

import torch


def squared_distances(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """``||q - k||^2`` for every pair, ``[Q, M]``, clamped at 0 against rounding."""
    product = queries @ keys.T
    return (queries.pow(2).sum(1, keepdim=True) - 2 * product + keys.pow(2).sum(1)[None]).clamp_min_(0)


@torch.no_grad()
def nearest_neighbour(
    queries: torch.Tensor,
    keys: torch.Tensor,
    query_groups: torch.Tensor | None = None,
    key_groups: torch.Tensor | None = None,
    chunk: int = 4096,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared distance to, and index of, each query's nearest key.

    A key whose group equals the query's group is never a match: with image ids as groups a
    patch cannot be matched to its own image (IRMB self-exclusion); with ``arange`` as groups
    a point cannot be its own neighbour. A query with no admissible key gets ``inf`` and -1.
    """
    distances = torch.empty(len(queries), device=queries.device)
    indices = torch.empty(len(queries), dtype=torch.long, device=queries.device)
    for start in range(0, len(queries), chunk):
        block = squared_distances(queries[start:start + chunk], keys)
        if query_groups is not None:
            same = query_groups[start:start + chunk, None] == key_groups[None]
            block.masked_fill_(same, float("inf"))
        distances[start:start + chunk], indices[start:start + chunk] = block.min(dim=1)
    indices[torch.isinf(distances)] = -1
    return distances, indices


def mutual_nearest_pairs(features: torch.Tensor) -> torch.Tensor:
    """Unique pairs (i, j), i < j, that are each other's nearest neighbour: ``[P, 2]``."""
    own = torch.arange(len(features), device=features.device)
    _, nearest = nearest_neighbour(features, features, own, own)
    valid = nearest >= 0
    mutual = valid & (nearest[nearest.clamp_min(0)] == own) & (own < nearest)
    return torch.stack([own[mutual], nearest[mutual]], dim=1)
