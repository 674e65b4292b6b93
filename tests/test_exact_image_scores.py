"""A bank searched approximately (faiss IVF) still gives images the scores exhaustive search gives them.

Guaranteed for the plain distance and SoftPatch, whose approximate scores bound the exact ones; for
the corroborated knn the approximate scores order the second search, which these data show suffices.

Exhaustive search is what the exported ONNX graph does, so `funad predict` with a model directory
and with its ONNX export agree on image scores (and on which side of the threshold an image falls),
and the threshold, set on the training images' scores, is on the same scale.
"""

import copy

import numpy as np
import pytest
import torch

from funad.baselines.softpatch import SoftPatch
from funad.export.onnx import patch_score_module
from funad.features.containers import MethodFeatures
from funad.inference.patch_bank import PatchBank
from funad.inference.scorers.knn import CORROBORATION_NEIGHBOURS, NearestNeighbourScorer
from funad.inference.search import APPROXIMATE_MIN_KEYS


def _gaussian_images(count, patches=100, dim=32, seed=0):
    """Patches of one wide Gaussian, which an IVF index's k-means cells split poorly, so that its probed cells
    miss many nearest neighbours; every fifth image holds a few patches off it (a defect)."""
    rng = np.random.default_rng(seed)
    images = []
    for index in range(count):
        image = rng.normal(size=(patches, dim))
        if index % 5 == 0:
            image[:3] += rng.normal(size=(3, dim))
        images.append(image.astype(np.float32))
    return images


def _exhaustive_training_scores(scorer, images):
    """Each training image's highest patch score over every entry but its own, by a full distance matrix."""
    bank = scorer.bank_.patches.double()
    floors = scorer.floors_ if scorer.corroborated else np.zeros(len(bank))
    neighbours = CORROBORATION_NEIGHBOURS if scorer.corroborated else 1
    scores = []
    for image, patches in enumerate(images):
        distances = torch.cdist(torch.from_numpy(patches).double(), bank).numpy()
        distances[:, scorer.bank_.image_ids == image] = np.inf
        nearest = np.argsort(distances, axis=1)[:, :neighbours]
        found = np.take_along_axis(distances, nearest, axis=1)
        scores.append(np.maximum(found, floors[nearest]).min(axis=1).max())
    return np.array(scores)


@pytest.mark.parametrize("corroborated", [False, True])
def test_image_scores_of_an_approximately_searched_bank_are_exhaustive_search_scores(corroborated):
    training = _gaussian_images(60)
    scorer = NearestNeighbourScorer(1.0, sampling="random", corroborated=corroborated).fit(MethodFeatures(training))
    assert len(scorer.bank_) > APPROXIMATE_MIN_KEYS and scorer.bank_.index.approximate

    queries = torch.from_numpy(np.stack(_gaussian_images(30, seed=1)))
    maps, image_scores = scorer.score(queries)
    image_floored, _ = patch_score_module(scorer)(queries)  # what the ONNX graph computes
    torch.testing.assert_close(image_scores, image_floored.amax(dim=1), rtol=1e-5, atol=1e-5)
    # The maps keep the approximate search, whose misses raise some images' highest patch score:
    # without the exhaustive second search these images would score higher than the graph scores them.
    assert (maps.amax(dim=1) > image_scores + 1e-4).any()

    np.testing.assert_allclose(scorer.score_training_images(MethodFeatures(training)),
                               _exhaustive_training_scores(scorer, training), rtol=1e-5)


def test_softpatch_scores_images_as_with_its_bank_searched_exhaustively():
    training = _gaussian_images(60)
    scorer = SoftPatch(0.15, 1.0).fit(MethodFeatures(training))
    assert scorer.bank_.index.approximate
    exhaustive = copy.copy(scorer)
    exhaustive.bank_ = PatchBank(scorer.bank_.patches, scorer.bank_.image_ids, exact=True)

    queries = torch.from_numpy(np.stack(_gaussian_images(30, seed=1)))
    maps, image_scores = scorer.score(queries)
    expected_maps, expected_scores = exhaustive.score(queries)
    torch.testing.assert_close(image_scores, expected_scores)
    assert (maps.amax(dim=1) > image_scores + 1e-4).any() and torch.equal(expected_scores, expected_maps.amax(dim=1))
    np.testing.assert_allclose(scorer.score_training_images(MethodFeatures(training)),
                               exhaustive.score_training_images(MethodFeatures(training)), rtol=1e-6)


def test_an_exact_bank_scores_images_by_its_patch_scores_alone():
    training = _gaussian_images(10)
    scorer = NearestNeighbourScorer(0.5, sampling="random", corroborated=True).fit(MethodFeatures(training))
    assert not scorer.bank_.index.approximate
    maps, image_scores = scorer.score(torch.from_numpy(np.stack(training[:4])))
    assert torch.equal(image_scores, maps.amax(dim=1))
