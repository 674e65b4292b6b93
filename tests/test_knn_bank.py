"""The knn scorer's capped pool and corroboration, on planted features where the right answer is known."""

import numpy as np
import pytest
import torch

from funad.features.containers import MethodFeatures
from funad.inference.patch_bank import sample_patches
from funad.inference.scorers.base import ScorerState
from funad.inference.scorers.knn import NearestNeighbourScorer


def _normal_images(count=12, patches=16, dim=8, seed=0):
    """Every image holds the same 16 normal patterns, slightly jittered."""
    rng = np.random.default_rng(seed)
    patterns = rng.normal(size=(patches, dim)).astype(np.float32)
    return [patterns + 0.01 * rng.normal(size=patterns.shape).astype(np.float32) for _ in range(count)], patterns


def _with_defect(images, image=3, position=5, dim=8):
    defect = np.full(dim, 10.0, dtype=np.float32)  # far from every normal pattern
    images[image] = images[image].copy()
    images[image][position] = defect
    return defect


def test_a_defect_seen_in_one_training_image_scores_high_only_when_corroboration_is_asked_for():
    images, patterns = _normal_images()
    defect = _with_defect(images)
    features = MethodFeatures(images)
    queries = torch.from_numpy(np.stack([defect, patterns[0]]))[None]  # [1, 2, D]
    plain = NearestNeighbourScorer(patch_fraction=1.0).fit(features).score_patches(queries)[0]
    corroborated = NearestNeighbourScorer(patch_fraction=1.0, corroborated=True).fit(features).score_patches(queries)[0]
    assert plain[0] < 1e-3  # the contaminated image explains its own defect away
    assert corroborated[0] > 5.0  # nothing else vouches for it: as far as the nearest normal pattern
    assert corroborated[1] < 0.1  # normal patterns, seen in every image, are unaffected


def test_corroborated_training_scores_leave_the_image_out_and_flag_the_defective_image():
    images, _ = _normal_images()
    _with_defect(images, image=3)
    scorer = NearestNeighbourScorer(patch_fraction=1.0, corroborated=True).fit(MethodFeatures(images))
    scores = scorer.score_training_images(MethodFeatures(images))
    assert int(np.argmax(scores)) == 3 and scores[3] > 10 * np.median(scores)


def test_corroborated_state_round_trips():
    images, patterns = _normal_images()
    _with_defect(images)
    scorer = NearestNeighbourScorer(patch_fraction=0.5, corroborated=True).fit(MethodFeatures(images))
    state = scorer.state_dict()
    restored = NearestNeighbourScorer.from_state(ScorerState(dict(state.tensors), state.settings), local_net=None)
    queries = torch.from_numpy(patterns)[None]
    assert torch.equal(scorer.score_patches(queries), restored.score_patches(queries))


@pytest.mark.parametrize("count", [1, 37, 191])
def test_sampled_pool_has_the_asked_size_and_true_rows(count):
    images, _ = _normal_images()
    features = MethodFeatures([image.astype(np.float16) for image in images])
    chosen = np.array([0, 2, 5, 7, 8, 11])
    pool, pool_images = sample_patches(features, chosen, count, np.random.default_rng(1))
    assert pool.shape == (min(count, len(chosen) * 16), 8) and set(pool_images) <= set(chosen)
    for row, image in zip(pool.numpy(), pool_images):  # every row is one of its image's patches
        assert np.isclose(features.arrays[image].astype(np.float32), row).all(axis=1).any()


def test_capped_pool_bounds_the_bank():
    images, _ = _normal_images(count=40)
    scorer = NearestNeighbourScorer(patch_fraction=0.1, pool_max_patches=100).fit(MethodFeatures(images))
    assert len(scorer.bank_) == 10
