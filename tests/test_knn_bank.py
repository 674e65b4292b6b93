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


def _rare_pattern_images(count=12, seed=0):
    """Normal images whose last pattern is seen, each time differently, in every image: vouched for only from afar."""
    images, patterns = _normal_images(count, seed=seed)
    rng = np.random.default_rng(seed + 1)
    for image in images:
        image[-1] = patterns[-1] + 1.5 * rng.normal(size=patterns.shape[1]).astype(np.float32)
    return images, patterns


def test_quantile_zero_is_todays_corroboration_bit_for_bit():
    images, patterns = _rare_pattern_images()
    _with_defect(images)
    features = MethodFeatures(images)
    queries = torch.from_numpy(np.concatenate([patterns, np.full((1, 8), 10.0, dtype=np.float32)]))[None]
    today = NearestNeighbourScorer(patch_fraction=0.5, corroborated=True).fit(features)
    explicit = NearestNeighbourScorer(patch_fraction=0.5, corroborated=True, corroboration_quantile=0.0).fit(features)
    assert torch.equal(today.score_patches(queries), explicit.score_patches(queries))
    assert np.array_equal(today.score_training_images(features), explicit.score_training_images(features))
    assert today.floors_ is today.vouched_  # no offset at all, not the minimum's


def test_quantile_one_is_the_plain_distance_to_the_same_bank():
    images, patterns = _rare_pattern_images()
    _with_defect(images)
    features = MethodFeatures(images)
    queries = torch.from_numpy(patterns + 0.3)[None]
    plain = NearestNeighbourScorer(patch_fraction=0.5).fit(features)
    softened = NearestNeighbourScorer(patch_fraction=0.5, corroborated=True, corroboration_quantile=1.0).fit(features)
    assert torch.equal(plain.bank_.patches, softened.bank_.patches)
    torch.testing.assert_close(softened.score_patches(queries), plain.score_patches(queries))


def test_softening_lowers_the_floors_by_the_quantile_and_keeps_the_unusual_ones():
    images, _ = _rare_pattern_images()
    _with_defect(images)
    scorer = NearestNeighbourScorer(patch_fraction=1.0, corroborated=True, corroboration_quantile=0.5)
    scorer.fit(MethodFeatures(images))
    offset = np.quantile(scorer.vouched_.astype(np.float64), 0.5)
    np.testing.assert_allclose(scorer.floors_, np.maximum(scorer.vouched_ - offset, 0), rtol=1e-6)
    assert (scorer.floors_ == 0).mean() >= 0.5  # half the entries count as fully vouched for
    defect_entry = int(np.argmax(scorer.vouched_))  # the planted defect: nothing else vouches for it
    assert scorer.floors_[defect_entry] > 5.0


def test_softening_moves_scores_monotonically_from_corroborated_to_plain():
    images, patterns = _rare_pattern_images()
    defect = _with_defect(images)
    features = MethodFeatures(images)
    queries = torch.from_numpy(np.stack([defect, images[0][-1], patterns[0]]))[None]  # defect, rare, common
    base = NearestNeighbourScorer(patch_fraction=1.0, corroborated=True).fit(features)
    scores = [base.with_corroboration_quantile(q).score_patches(queries)[0] for q in (0.0, 0.25, 0.5, 0.9, 1.0)]
    for higher, lower in zip(scores, scores[1:]):
        assert (lower <= higher + 1e-6).all()
    assert scores[-1][1] < 1e-3 and scores[0][1] > 0.5  # a banked rare normal pattern: lifted by corroboration
    assert scores[2][0] > 5.0  # a defect of one image keeps its floor at the median
    assert scores[-1][0] < 1e-3  # and loses it without corroboration


def test_with_corroboration_quantile_scores_as_a_scorer_fitted_with_it():
    images, patterns = _rare_pattern_images()
    _with_defect(images)
    features = MethodFeatures(images)
    queries = torch.from_numpy(patterns + 0.2)[None]
    base = NearestNeighbourScorer(patch_fraction=0.5, corroborated=True).fit(features)
    fitted = NearestNeighbourScorer(patch_fraction=0.5, corroborated=True, corroboration_quantile=0.25).fit(features)
    derived = base.with_corroboration_quantile(0.25)
    assert torch.equal(derived.score_patches(queries), fitted.score_patches(queries))
    assert derived.settings() == fitted.settings() and base.corroboration_quantile == 0.0  # the original is kept
    with pytest.raises(ValueError, match="corroborated"):
        NearestNeighbourScorer(patch_fraction=0.5).fit(features).with_corroboration_quantile(0.5)


def test_softened_state_round_trips_with_its_quantile():
    images, patterns = _rare_pattern_images()
    _with_defect(images)
    scorer = NearestNeighbourScorer(patch_fraction=0.5, corroborated=True, corroboration_quantile=0.5)
    scorer.fit(MethodFeatures(images))
    state = scorer.state_dict()
    assert state.settings["corroboration_quantile"] == 0.5
    restored = NearestNeighbourScorer.from_state(ScorerState(dict(state.tensors), state.settings), local_net=None)
    queries = torch.from_numpy(patterns + 0.2)[None]
    assert restored.corroboration_quantile == 0.5
    assert torch.equal(scorer.score_patches(queries), restored.score_patches(queries))


def test_a_state_saved_before_the_quantile_existed_loads_as_full_corroboration():
    images, patterns = _rare_pattern_images()
    scorer = NearestNeighbourScorer(patch_fraction=0.5, corroborated=True).fit(MethodFeatures(images))
    state = scorer.state_dict()
    settings = {k: v for k, v in state.settings.items() if k != "corroboration_quantile"}
    restored = NearestNeighbourScorer.from_state(ScorerState(dict(state.tensors), settings), local_net=None)
    queries = torch.from_numpy(patterns)[None]
    assert restored.corroboration_quantile == 0.0
    assert torch.equal(scorer.score_patches(queries), restored.score_patches(queries))


@pytest.mark.parametrize("quantile, corroborated", [(-0.1, True), (1.5, True), (0.5, False)])
def test_a_quantile_outside_0_1_or_without_corroboration_is_refused(quantile, corroborated):
    with pytest.raises(ValueError, match="corroborat"):
        NearestNeighbourScorer(corroborated=corroborated, corroboration_quantile=quantile)


def test_the_config_field_reaches_the_scorer_and_is_checked():
    from funad.config import FunADConfig

    scorer = NearestNeighbourScorer.from_config(FunADConfig(knn_corroboration_quantile=0.25), local_net=None)
    assert scorer.corroborated and scorer.corroboration_quantile == 0.25
    assert NearestNeighbourScorer.from_config(FunADConfig(), local_net=None).corroboration_quantile == 0.0
    for bad in ({"knn_corroboration_quantile": 1.2}, {"knn_corroboration_quantile": 0.5, "knn_corroborated": False}):
        with pytest.raises(ValueError, match="knn_corroborat"):
            FunADConfig(**bad)


def test_the_onnx_module_carries_the_softened_floors():

    from funad.export.onnx import patch_score_module

    images, patterns = _rare_pattern_images()
    _with_defect(images)
    scorer = NearestNeighbourScorer(patch_fraction=0.5, corroborated=True, corroboration_quantile=0.5)
    scorer.fit(MethodFeatures(images))
    module = patch_score_module(scorer)
    queries = torch.from_numpy(np.concatenate([patterns + 0.2, images[3] + 0.05]))[None]  # image 3: the defect
    expected = scorer.score_patches(queries)
    assert expected.max() > 5.0  # the defect's floor is in play
    image_floored, map_floored = module(queries)
    torch.testing.assert_close(map_floored, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(image_floored, expected, rtol=1e-4, atol=1e-4)  # one image vouches in both


def _shared_defect_images():
    """Normal images; images 2, 5 and 9 share one defect, which each of them vouches for in the others."""
    images, patterns = _normal_images()
    for image in (2, 5, 9):
        _with_defect(images, image=image)
    return images, patterns


def test_vouched_distance_of_the_kth_other_image_equals_brute_force(monkeypatch):
    from funad.inference import patch_bank
    from funad.inference.scorers import knn

    rng = np.random.default_rng(3)
    pool_patches = rng.normal(size=(300, 4)).astype(np.float32)
    pool_images = rng.integers(0, 12, size=300)
    bank_rows = rng.choice(300, 40, replace=False)
    bank = patch_bank.PatchBank(torch.from_numpy(pool_patches[bank_rows]), pool_images[bank_rows])
    pool = patch_bank.PatchBank(torch.from_numpy(pool_patches), pool_images, exact=True)
    monkeypatch.setattr(knn, "VOUCHING_NEIGHBOURS", 8)  # most entries need the wider search again
    monkeypatch.setattr(knn, "VOUCHING_QUERY_BLOCK", 7)  # in blocks, the last one shorter, in every round
    first, third, eleventh = knn.vouched_distances(bank, pool, (1, 3, 11))
    distances = np.linalg.norm(pool_patches[bank_rows][:, None] - pool_patches[None], axis=-1)
    for entry, own in enumerate(pool_images[bank_rows]):
        nearest_per_image = np.sort([distances[entry, pool_images == image].min()
                                     for image in np.unique(pool_images) if image != own])
        np.testing.assert_allclose([first[entry], third[entry], eleventh[entry]], nearest_per_image[[0, 2, 10]],
                                   rtol=1e-5)


def test_maps_refuse_a_defect_that_a_few_images_share_and_image_scores_stay_lenient():
    images, patterns = _shared_defect_images()
    features = MethodFeatures(images)
    queries = torch.from_numpy(np.stack([np.full(8, 10.0, np.float32), patterns[0]]))[None]
    lenient = NearestNeighbourScorer(patch_fraction=1.0, corroborated=True).fit(features)
    strict = NearestNeighbourScorer(patch_fraction=1.0, corroborated=True, map_corroboration_images=3).fit(features)
    assert lenient.score_patches(queries)[0, 0] < 0.1  # two other images vouch for the shared defect
    map_scores, image_scores = strict.score(queries)
    assert map_scores[0, 0] > 5.0 and map_scores[0, 1] < 0.1  # only two others have it; normal patterns: all
    torch.testing.assert_close(image_scores, lenient.score(queries)[1])  # image scores: one image vouches
    assert torch.equal(strict.score_patches(queries), map_scores)
    np.testing.assert_array_equal(strict.score_training_images(features), lenient.score_training_images(features))


def test_map_corroboration_round_trips_and_older_states_load_as_one_image():
    images, patterns = _shared_defect_images()
    scorer = NearestNeighbourScorer(patch_fraction=0.5, corroborated=True, map_corroboration_images=3)
    scorer.fit(MethodFeatures(images))
    state = scorer.state_dict()
    restored = NearestNeighbourScorer.from_state(ScorerState(dict(state.tensors), state.settings), local_net=None)
    queries = torch.from_numpy(np.concatenate([patterns, np.full((1, 8), 10.0, np.float32)]))[None]
    for mine, theirs in zip(scorer.score(queries), restored.score(queries)):
        assert torch.equal(mine, theirs)
    older = {name: value for name, value in state.settings.items() if name != "map_corroboration_images"}
    tensors = {name: value for name, value in state.tensors.items() if name != "map_vouched"}
    old = NearestNeighbourScorer.from_state(ScorerState(tensors, older), local_net=None)
    assert old.map_corroboration_images == 1 and old.map_floors_ is old.floors_


def test_map_corroboration_needs_corroboration():
    with pytest.raises(ValueError, match="map_corroboration_images"):
        NearestNeighbourScorer(map_corroboration_images=2)
    with pytest.raises(ValueError, match="map_corroboration_images"):
        NearestNeighbourScorer(corroborated=True, map_corroboration_images=0)


def test_sampling_is_checked_and_turned_vouchers_need_the_coresets_pool():
    with pytest.raises(ValueError, match="sampling must be 'coreset' or 'random', got 'randm'"):
        NearestNeighbourScorer(sampling="randm")
    with pytest.raises(ValueError, match="corroboration_views need sampling='coreset'"):
        NearestNeighbourScorer(sampling="random", corroborated=True, corroboration_views=("rot90",))


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_a_bank_share_outside_0_1_is_refused_before_training(fraction):
    from funad.config import FunADConfig

    with pytest.raises(ValueError, match=r"knn_patch_fraction must lie in \(0, 1\]"):
        FunADConfig(knn_patch_fraction=fraction)
    for sampling in ("coreset", "random"):  # the scorer itself too, whichever way it samples
        with pytest.raises(ValueError, match=r"patch_fraction must lie in \(0, 1\]"):
            NearestNeighbourScorer(fraction, sampling=sampling)


@pytest.mark.parametrize("map_images", [1, 5])
def test_a_corroborated_bank_of_one_image_is_refused_with_the_reason(map_images):
    images, _ = _normal_images()
    scorer = NearestNeighbourScorer(patch_fraction=0.5, corroborated=True, map_corroboration_images=map_images)
    with pytest.raises(ValueError, match="at least 2 training images .* got 1"):
        scorer.fit(MethodFeatures(images), image_ids=np.array([3]))


def test_an_image_never_finds_itself_past_its_own_entries():
    from funad.inference.patch_bank import PatchBank

    patches = torch.tensor([[0.0], [0.1], [0.2], [5.0]])
    bank = PatchBank(patches, np.array([0, 0, 0, 1]))
    distances, hits = bank.nearest_from_other_images(torch.tensor([[0.05], [4.0]]), np.array([0, 1]))
    np.testing.assert_allclose(distances, [4.95, 3.8], rtol=1e-5)  # image 0's query passes its 3 own entries
    assert hits.tolist() == [3, 2]
    past, _ = bank.search_past_own(torch.tensor([[0.05]]), 1, 0)
    assert past.shape == (1, 4) and np.isinf(past).sum() == 3  # searched 3 past k: its own at inf
    lonely = PatchBank(patches[:3], np.array([0, 0, 0]))
    assert np.isinf(lonely.nearest_from_other_images(torch.tensor([[0.0]]), 0)[0]).all()  # no other image: inf
