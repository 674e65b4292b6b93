"""Exact nearest-neighbour search with self-exclusion: faiss on CPU (a blocked matrix product for the
few keys that share a query's group), blocked matrix products on CUDA.

Both paths are exact (flat L2), so they find the same neighbours; distances agree up to float
rounding. The faiss path is :mod:`funad.inference.search`.
"""

from __future__ import annotations

import torch

from funad.inference.search import FlatIndex

# Distance-matrix block size for the torch path (64 MB of float32): bounds memory for any bank size.
BLOCK_ELEMENTS = 1 << 24


def _faiss_search(queries: torch.Tensor, keys: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest keys of each query by exhaustive search: squared distances and indices."""
    distances, indices = FlatIndex(keys).search(queries, k)
    return torch.from_numpy(distances), torch.from_numpy(indices)


def _matmul_nearest(queries: torch.Tensor, keys: torch.Tensor, query_groups: torch.Tensor | None,
                    key_groups: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact search by blocked matrix products, keys of the query's own group masked out."""
    if len(keys) == 0:
        return (torch.full((len(queries),), float("inf"), device=queries.device),
                torch.full((len(queries),), -1, dtype=torch.long, device=queries.device))
    distances = torch.empty(len(queries), device=queries.device)
    indices = torch.empty(len(queries), dtype=torch.long, device=queries.device)
    key_norms = keys.pow(2).sum(1)
    rows = max(1, BLOCK_ELEMENTS // max(1, len(keys)))
    for start in range(0, len(queries), rows):
        block_queries = queries[start:start + rows]
        # ||q||^2 is the same along a row: add it after the arg-min, one pass less over the block.
        block = torch.addmm(key_norms, block_queries, keys.T, alpha=-2)
        if query_groups is not None and key_groups is not None:
            block.masked_fill_(query_groups[start:start + rows, None] == key_groups[None], float("inf"))
        nearest, indices[start:start + rows] = block.min(dim=1)
        distances[start:start + rows] = (nearest + block_queries.pow(2).sum(1)).clamp_min(0)
    indices[torch.isinf(distances)] = -1
    return distances, indices


@torch.no_grad()
def nearest_neighbour(
    queries: torch.Tensor,
    keys: torch.Tensor,
    query_groups: torch.Tensor | None = None,
    key_groups: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared distance to, and index of, each query's nearest key.

    A key whose group equals the query's group is never a match: with image ids as groups a
    patch cannot be matched to its own image (IRMB self-exclusion). A query with no admissible
    key gets ``inf`` and -1.
    """
    if queries.device.type != "cpu":
        return _matmul_nearest(queries, keys, query_groups, key_groups)
    if query_groups is None or key_groups is None:
        distances, indices = _faiss_search(queries, keys, 1)
        return distances[:, 0], indices[:, 0]
    # Only keys from the queries' own groups can need masking (a batch's images are a few of
    # the bank's): every other key goes to faiss unmasked, the few shared ones to the masked matmul.
    shared = torch.isin(key_groups, query_groups)
    distances = torch.full((len(queries),), float("inf"))
    indices = torch.full((len(queries),), -1, dtype=torch.long)
    for subset, masked in ((~shared, False), (shared, True)):
        positions = subset.nonzero()[:, 0]
        if len(positions) == 0:
            continue
        if masked:
            found_distances, found = _matmul_nearest(queries, keys[positions], query_groups, key_groups[positions])
        else:
            found_distances, found = (column[:, 0] for column in _faiss_search(queries, keys[positions], 1))
        closer = found_distances < distances
        distances[closer] = found_distances[closer]
        indices[closer] = positions[found[closer]]
    return distances, indices


@torch.no_grad()
def nearest_other_point(points: torch.Tensor, queries: range | None = None) -> torch.Tensor:
    """Index of each point's nearest other point; -1 for a lone point.

    ``queries``: the positions of the points to answer for (default all of them), each still
    searched against every point (a rank's share of the data-parallel search).
    """
    queries = range(len(points)) if queries is None else queries
    asked = points[queries.start:queries.stop]
    own = torch.arange(queries.start, queries.stop, device=points.device)
    if points.device.type != "cpu" or len(points) < 2:
        return _matmul_nearest(asked, points, own, torch.arange(len(points), device=points.device))[1]
    _, found = _faiss_search(asked, points, 2)
    # The point itself is normally the first hit; an exact duplicate may come before it.
    return torch.where(found[:, 0] == own, found[:, 1], found[:, 0])


def mutual_pairs(nearest: torch.Tensor) -> torch.Tensor:
    """The unique pairs (i, j), i < j, with ``nearest[i] == j`` and ``nearest[j] == i``: ``[P, 2]``."""
    own = torch.arange(len(nearest), device=nearest.device)
    valid = nearest >= 0
    mutual = valid & (nearest[nearest.clamp_min(0)] == own) & (own < nearest)
    return torch.stack([own[mutual], nearest[mutual]], dim=1)
