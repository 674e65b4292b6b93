"""PatchCore and SoftPatch on small synthetic feature sets."""

import numpy as np
import pytest
import torch

from funad.baselines import PatchCore, SoftPatch
from funad.baselines.softpatch import keep_inliers
from funad.features.containers import MethodFeatures
from funad.inference.coreset import greedy_coreset


def _brute_force_k_center(points: np.ndarray, first: int, count: int) -> list[int]:
    """Textbook greedy k-center: repeatedly add the point farthest from its nearest chosen point."""
    chosen = [first]
    while len(chosen) < count:
        distances = np.linalg.norm(points[:, None, :] - points[chosen][None, :, :], axis=2).min(axis=1)
        chosen.append(int(np.argmax(distances)))
    return chosen


def test_greedy_coreset_equals_brute_force_k_center():
    points = torch.randn(200, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64).float()
    chosen = greedy_coreset(points, 25, projection_dim=None, seed=3)
    assert len(set(chosen.tolist())) == 25
    assert chosen.tolist() == _brute_force_k_center(points.double().numpy(), int(chosen[0]), 25)


def _projected(points: torch.Tensor, dim: int, seed: int) -> tuple[torch.Tensor, int]:
    """The rows as greedy_coreset projects them, and its first row (the same draws of the same generator)."""
    generator = torch.Generator().manual_seed(seed)
    projection = torch.randn(points.shape[1], dim, generator=generator) / dim**0.5
    return points @ projection, int(torch.randint(len(points), (1,), generator=generator))


def _every_row_updated(points: torch.Tensor, count: int, seed: int) -> list[int]:
    """The greedy selection updating every row at every step, as greedy_coreset did before it skipped rows."""
    points, first = _projected(points, 8, seed)
    norms = points.pow(2).sum(1)
    chosen = [first]
    nearest = torch.full((len(points),), float("inf"))
    for _ in range(count):
        torch.minimum(nearest, torch.addmv(norms + norms[chosen[-1]], points, points[chosen[-1]], alpha=-2),
                      out=nearest)
        chosen.append(int(torch.argmax(nearest)))
    return chosen[:count]


def test_greedy_coreset_skipping_unreachable_rows_chooses_the_farthest_row_at_every_step():
    # Tight clusters far apart (most rows out of a new centre's reach) and exact duplicates (distances of 0,
    # where float32 rounding of the expanded distances matters most).
    generator = torch.Generator().manual_seed(2)
    centres = torch.randn(40, 16, generator=generator) * 20
    points = centres.repeat_interleave(50, 0) + torch.randn(2000, 16, generator=generator) * 0.5
    points = torch.cat([points, points[:100]])
    # As the selection that updates every row: the same rows while no two candidates tie to float32 rounding.
    assert greedy_coreset(points, 300, projection_dim=8, seed=5).tolist() == _every_row_updated(points, 300, 5)
    # Over the whole run (near-ties included: a subset's matrix-vector product may round a row's distance in
    # the last bit otherwise), each step's row is the farthest from those chosen before, in float64, up to
    # float32's rounding of distances expanded from squared norms (a row left stale would miss by far more).
    chosen = greedy_coreset(points, len(points) - 1, projection_dim=8, seed=5)
    projected = _projected(points, 8, 5)[0].double()
    rounding = 1e-6 * float(projected.pow(2).sum(1).max())
    nearest = torch.full((len(points),), float("inf"), dtype=torch.float64)
    for step, row in enumerate(chosen):
        if step:
            assert nearest.max() - nearest[row] <= rounding, step
        nearest = torch.minimum(nearest, (projected - projected[row]).pow(2).sum(1))


def test_greedy_coreset_picks_the_farthest_points():
    cluster = torch.randn(300, 16, generator=torch.Generator().manual_seed(0)) * 0.1
    outliers = torch.eye(16)[:3] * 50.0
    points = torch.cat([cluster, outliers])
    # In a random projection too, the three far points stay the farthest from the cluster.
    chosen = set(greedy_coreset(points, 4, projection_dim=8, seed=0).tolist())
    assert {300, 301, 302} <= chosen


def test_a_coreset_of_every_row_is_every_row_in_order_without_a_search():
    # The image level banks every image's vector: thousands of greedy steps over thousands of rows would choose
    # the same set (the greedy order starts at a random row, so this order shows no search ran).
    points = torch.randn(50, 6, generator=torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(greedy_coreset(points, 50, seed=3), np.arange(50))


def _features(num_images=20, positions=4, dim=8, seed=0, planted=()) -> MethodFeatures:
    """Aligned images: each position has its own mean; ``planted`` (image, position) patches are far off."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 3, (positions, dim))
    arrays = means[None] + rng.normal(0, 0.1, (num_images, positions, dim))
    for image, position in planted:
        arrays[image, position] += 5.0
    return MethodFeatures([a.astype(np.float16) for a in arrays])


def _scores(scorer, patches: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(image scores [B], patch scores [B, K])."""
    patch_scores = scorer.score_patches(patches)
    return scorer.image_scores(patches, patch_scores).numpy(), patch_scores.numpy()


def test_patchcore_scores_are_nearest_bank_distances():
    features = _features()
    model = PatchCore(coreset_fraction=0.5, seed=0).fit(features)
    queries = torch.randn(3, 4, 8)
    image_scores, patch_scores = _scores(model, queries)
    bank = model.bank_.patches
    expected = torch.cdist(queries.reshape(-1, 8), bank).min(dim=1).values.reshape(3, 4)
    np.testing.assert_allclose(patch_scores, expected.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(image_scores, patch_scores.max(axis=1))
    reweighted, _ = _scores(PatchCore(coreset_fraction=0.5, reweight=True, seed=0).fit(features), queries)
    assert np.all(reweighted <= image_scores + 1e-6) and np.all(reweighted >= 0)


# Every image, or LOF fitted on a sample of 12 (int(0.1 * 12) = 1 dropped per position, as int(0.05 * 20)).
@pytest.mark.parametrize(("reference_images", "noise_fraction"), [(1000, 0.05), (12, 0.1)])
def test_softpatch_drops_planted_outlier_patches_and_keeps_their_defects_visible(reference_images, noise_fraction):
    planted = [(3, 1), (7, 2)]
    features = _features(planted=planted)
    softpatch = SoftPatch(noise_fraction=noise_fraction, coreset_fraction=1.0, seed=0,
                          lof_reference_images=reference_images).fit(features)
    if reference_images >= len(features):
        assert not softpatch.kept_[3, 1] and not softpatch.kept_[7, 2]
        assert softpatch.kept_.sum() == 20 * 4 - 4  # int(0.05 * 20) = 1 dropped per position
    bank = {(int(image), tuple(patch)) for image, patch in zip(softpatch.bank_.image_ids,
                                                               softpatch.bank_.patches.numpy().round(2))}
    planted_rows = {(image, tuple(features.take([image])[0, position].numpy().round(2))) for image, position in planted}
    assert not bank & planted_rows
    # A test image showing the planted defect: PatchCore has it in its bank and misses it.
    defect = features.take([3])
    softpatch_image, _ = _scores(softpatch, defect)
    patchcore_image, _ = _scores(PatchCore(coreset_fraction=1.0, seed=0).fit(features), defect)
    assert patchcore_image[0] < 1e-3 < 1.0 < softpatch_image[0]


def test_keep_inliers_checks_the_noise_fraction():
    factors = np.arange(12, dtype=float).reshape(6, 2)
    assert keep_inliers(factors, 0.0).all()
    np.testing.assert_array_equal(keep_inliers(factors, 0.34)[:, 0], [True] * 4 + [False] * 2)
    with pytest.raises(ValueError, match="noise_fraction"):
        keep_inliers(factors, 1.0)
