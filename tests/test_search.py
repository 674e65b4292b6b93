"""The search factory: exact below its threshold, a seeded IVF index above it with near-exact answers."""

from pathlib import Path

import numpy as np
import pytest
import torch

import funad.inference.search as search
from funad.features.cache import FeatureCache
from funad.features.containers import MethodFeatures
from funad.inference.patch_bank import PatchBank
from funad.inference.search import FlatIndex, IVFIndex, nearest_index


def _clustered(seed: int, count: int, centres: int = 64, dim: int = 32) -> np.ndarray:
    rng = np.random.default_rng(0)  # the same centres for keys and queries
    means = rng.standard_normal((centres, dim)).astype(np.float32) * 4
    own = np.random.default_rng(seed)
    return means[own.integers(centres, size=count)] + own.standard_normal((count, dim)).astype(np.float32)


def test_ivf_finds_the_exact_neighbour_for_almost_every_query():
    keys, queries = _clustered(1, 8000), _clustered(2, 1000)
    exact = FlatIndex(keys).search(queries)[1][:, 0]
    approximate = IVFIndex(keys).search(queries)[1][:, 0]
    assert np.mean(approximate == exact) >= 0.95


def test_an_ivf_index_searched_exactly_answers_as_an_exhaustive_one():
    keys, queries = _clustered(1, 3000), _clustered(2, 300)
    ivf, flat = IVFIndex(keys, cells=50, nprobe=1), FlatIndex(keys)
    assert ivf.approximate and not flat.approximate
    assert not np.array_equal(ivf.search(queries, k=5)[1], flat.search(queries, k=5)[1])  # one cell misses some
    for exact, expected in zip(ivf.search_exactly(queries, k=5), flat.search(queries, k=5)):
        np.testing.assert_array_equal(exact, expected)


def test_ivf_is_deterministic_and_answers_k_neighbours_even_from_sparse_cells():
    keys, queries = _clustered(3, 2000), _clustered(4, 200)
    first = IVFIndex(keys, cells=50, nprobe=1).search(queries, k=100)
    second = IVFIndex(keys, cells=50, nprobe=1).search(queries, k=100)
    np.testing.assert_array_equal(first[1], second[1])
    assert (first[1] >= 0).all()  # ~40 keys per cell: the short queries were searched exhaustively


def test_the_factory_switches_above_the_threshold(monkeypatch):
    keys = _clustered(5, 3000)
    assert type(nearest_index(keys, approximate_min_keys=3000)) is FlatIndex
    assert type(nearest_index(keys, approximate_min_keys=2999)) is IVFIndex
    assert type(nearest_index(keys, approximate_min_keys=None)) is FlatIndex
    monkeypatch.setattr(search, "APPROXIMATE_MIN_KEYS", 2999)
    monkeypatch.setattr("funad.inference.patch_bank.APPROXIMATE_MIN_KEYS", 2999)
    assert type(PatchBank(torch.from_numpy(keys)).index) is IVFIndex
    assert type(PatchBank(torch.from_numpy(keys), exact=True).index) is FlatIndex


def test_cached_patches_hold_no_memory_map_between_reads(tmp_path):
    cache = FeatureCache(tmp_path, {"grid": [1, 4], "patch_dim": 3, "global_dim": 1}, "test")
    written = [np.arange(12, dtype=np.float16).reshape(4, 3) + i for i in range(50)]
    for i, patches in enumerate(written):
        cache.put(f"image{i}", patches, np.zeros(1))
    features = MethodFeatures([hit[0] for hit in (cache.get(f"image{i}") for i in range(50)) if hit is not None])
    maps = [line for line in Path("/proc/self/maps").read_text().splitlines() if str(tmp_path) in line]
    assert maps == []
    np.testing.assert_array_equal(features.take([7, 3]).numpy(), np.stack([written[7], written[3]]))
    np.testing.assert_array_equal(features.take([9], np.array([1, 3]))[0].numpy(), written[9][[1, 3]])


@pytest.mark.parametrize("k", [1, 5])
def test_flat_index_distances_are_squared_l2(k):
    keys, queries = _clustered(6, 300), _clustered(7, 20)
    distances, indices = FlatIndex(keys).search(queries, k)
    expected = ((queries[:, None] - keys[indices]) ** 2).sum(-1)
    np.testing.assert_allclose(distances, expected, rtol=1e-4, atol=1e-3)
