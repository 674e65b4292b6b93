"""Corroboration for the highest-scoring images only: the other training images' bank entries are exempt."""

import numpy as np
import pytest
import torch

from funad.config import FunADConfig
from funad.features.containers import MethodFeatures
from funad.inference.scorers.base import ScorerState
from funad.inference.scorers.knn import NearestNeighbourScorer

DIM = 8
DEFECT = np.full(DIM, 10.0, dtype=np.float32)  # far from every normal pattern


def _images(count=12, seed=0):
    """Normal images of 16 jittered patterns; image 7 alone holds a rare normal pattern, image 3 a defect.

    The rare pattern sits 3 from the nearest common one and the defect 10: the defect's image scores
    highest as a new image, the rare pattern's next.
    """
    rng = np.random.default_rng(seed)
    patterns = rng.normal(size=(16, DIM)).astype(np.float32)
    images = [patterns + 0.01 * rng.normal(size=patterns.shape).astype(np.float32) for _ in range(count)]
    rare = patterns[0] + np.float32(3.0) * np.eye(DIM, dtype=np.float32)[0]
    images[7][0], images[3][5] = rare, DEFECT
    return images, patterns, rare


def _fit(share, **settings):
    images, patterns, rare = _images()
    scorer = NearestNeighbourScorer(patch_fraction=1.0, corroborated=True, corroborated_share=share, **settings)
    return scorer.fit(MethodFeatures(images)), MethodFeatures(images), patterns, rare


def test_share_one_is_full_corroboration_bit_for_bit():
    full, features, patterns, rare = _fit(1.0)
    default = NearestNeighbourScorer(patch_fraction=1.0, corroborated=True).fit(features)
    assert default.corroborated_share == 1.0 and not full.exempt_entries_.any()
    assert full.floors_ is full.vouched_  # no copy: the floors are the vouched distances themselves
    queries = torch.from_numpy(np.stack([DEFECT, rare, patterns[1]]))[None]
    assert torch.equal(default.score_patches(queries), full.score_patches(queries))


def test_only_the_highest_scoring_images_entries_keep_their_floors():
    scorer, features, *_ = _fit(2 / 12)  # two of twelve: the defect's image and the rare pattern's
    full, *_ = _fit(1.0)
    scores = full.score_training_images(features)
    assert set(np.argsort(-scores)[:2]) == {3, 7}
    corroborated = np.isin(scorer.bank_.image_ids, [3, 7])
    np.testing.assert_array_equal(scorer.exempt_entries_, ~corroborated)
    assert (scorer.floors_[~corroborated] == 0).all()
    np.testing.assert_array_equal(scorer.floors_[corroborated], full.floors_[corroborated])


def test_a_rare_normal_pattern_of_an_exempt_image_covers_it_and_a_corroborated_images_defect_scores_high():
    full, _, patterns, rare = _fit(1.0)
    narrowed, *_ = _fit(1 / 12)  # one corroborated image: the defect's
    queries = torch.from_numpy(np.stack([rare + 0.05, DEFECT, patterns[1]]))[None]
    before, after = full.score_patches(queries)[0], narrowed.score_patches(queries)[0]
    assert before[0] > 2.0 and after[0] < 0.2  # only image 7 has it: corroboration lifted it, now it is covered
    assert before[1] > 5.0 and after[1] > 5.0  # the defect's image keeps its floors: nothing vouches for it
    assert after[2] < 0.1


def test_the_maps_floors_exempt_the_same_entries():
    scorer, *_ = _fit(2 / 12, map_corroboration_images=3)
    assert (scorer.map_floors_[scorer.exempt_entries_] == 0).all()
    assert (scorer.map_floors_[~scorer.exempt_entries_] > 0).all()


def test_the_share_is_ranked_among_the_fitted_images_only():
    images, *_ = _images()
    features = MethodFeatures(images)
    fitted = np.array([0, 1, 2, 4, 5, 6, 7, 8])  # the defect's image 3, the highest-scoring, is not in the bank
    scorer = NearestNeighbourScorer(patch_fraction=1.0, corroborated=True, corroborated_share=0.5)
    scorer.fit(features, fitted)
    kept = set(scorer.bank_.image_ids[~scorer.exempt_entries_])
    assert len(kept) == 4 and 7 in kept and kept <= set(fitted)  # half of the 8 fitted images, the rare one first


def test_the_state_round_trips_and_an_older_state_loads_as_full_corroboration():
    scorer, _, patterns, rare = _fit(2 / 12)
    state = scorer.state_dict()
    restored = NearestNeighbourScorer.from_state(ScorerState(dict(state.tensors), state.settings), local_net=None)
    queries = torch.from_numpy(np.stack([DEFECT, rare, patterns[1]]))[None]
    assert restored.corroborated_share == scorer.corroborated_share
    for mine, theirs in zip(scorer.score(queries), restored.score(queries)):
        assert torch.equal(mine, theirs)
    older = {name: value for name, value in state.settings.items() if name != "corroborated_share"}
    tensors = {name: value for name, value in state.tensors.items() if name != "exempt_entries"}
    old = NearestNeighbourScorer.from_state(ScorerState(tensors, older), local_net=None)
    assert old.corroborated_share == 1.0 and not old.exempt_entries_.any() and old.floors_ is old.vouched_


def test_the_exemptions_do_not_depend_on_the_softening():
    images, *_ = _images()
    features = MethodFeatures(images)
    fitted = NearestNeighbourScorer(patch_fraction=1.0, corroborated=True, corroboration_quantile=0.5,
                                    corroborated_share=2 / 12).fit(features)
    derived = _fit(2 / 12)[0].with_corroboration_quantile(0.5)
    np.testing.assert_array_equal(fitted.exempt_entries_, derived.exempt_entries_)
    np.testing.assert_array_equal(fitted.floors_, derived.floors_)


def test_a_state_that_lost_its_exempt_entries_is_refused():
    scorer, *_ = _fit(2 / 12)
    state = scorer.state_dict()
    for tensors in ({name: value for name, value in state.tensors.items() if name != "exempt_entries"},
                    {**state.tensors, "exempt_entries": state.tensors["exempt_entries"][:-1]}):
        with pytest.raises(ValueError, match="exempt_entries"):
            NearestNeighbourScorer.from_state(ScorerState(tensors, state.settings), local_net=None)


def test_softening_applies_to_the_corroborated_entries_only():
    scorer, *_ = _fit(2 / 12)
    softened = scorer.with_corroboration_quantile(0.5)
    assert (softened.floors_[scorer.exempt_entries_] == 0).all()
    offset = np.quantile(scorer.vouched_.astype(np.float64), 0.5)
    kept = ~scorer.exempt_entries_
    np.testing.assert_allclose(softened.floors_[kept], np.maximum(scorer.vouched_[kept] - offset, 0),
                               rtol=1e-6)


@pytest.mark.parametrize("share, corroborated", [(-0.1, True), (1.5, True), (0.5, False)])
def test_a_share_outside_0_1_or_without_corroboration_is_refused(share, corroborated):
    with pytest.raises(ValueError, match="corroborated_share"):
        NearestNeighbourScorer(corroborated=corroborated, corroborated_share=share)


def test_the_config_field_reaches_the_scorer_is_checked_and_older_configurations_load_with_one():
    scorer = NearestNeighbourScorer.from_config(FunADConfig(knn_corroborated_share=0.25), local_net=None)
    assert scorer.corroborated_share == 0.25
    # Without corroboration there are no floors to keep: the share is ignored, not an error.
    plain = NearestNeighbourScorer.from_config(FunADConfig(knn_corroborated=False), local_net=None)
    assert plain.corroborated_share == 1.0
    image_level = NearestNeighbourScorer.from_config(FunADConfig(level="image"), local_net=None)
    assert image_level.corroborated_share == 1.0  # measured on patches only
    with pytest.raises(ValueError, match="knn_corroborated_share"):
        FunADConfig(knn_corroborated_share=1.5)
    saved = {k: v for k, v in FunADConfig().to_dict().items() if k != "knn_corroborated_share"}
    assert FunADConfig.from_dict(saved).knn_corroborated_share == 1.0


def test_the_default_corroborates_the_highest_scoring_half():
    assert NearestNeighbourScorer.from_config(FunADConfig(), local_net=None).corroborated_share == 0.5


def test_the_onnx_module_carries_the_exempt_floors():

    from funad.export.onnx import patch_score_module

    scorer, _, patterns, rare = _fit(1 / 12, map_corroboration_images=3)
    module = patch_score_module(scorer)
    queries = torch.from_numpy(np.stack([rare + 0.05, DEFECT, patterns[1]]))[None]
    map_scores, image_scores = scorer.score(queries)
    assert map_scores[0, 0] < 0.2 and map_scores[0, 1] > 5.0  # covered rare pattern, floored defect
    image_floored, map_floored = module(queries)
    torch.testing.assert_close(map_floored, map_scores, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(image_floored.amax(dim=1), image_scores, rtol=1e-4, atol=1e-4)
