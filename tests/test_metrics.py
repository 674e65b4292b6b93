"""Metrics against sklearn, hand-checked cases and a brute-force AUPRO reference."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import precision_recall_curve, roc_auc_score

from funad.metrics import PixelMetrics, f1_max, image_auroc, threshold_metrics


def random_images(seed: int, count: int = 12, size: int = 32) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """Noisy maps whose masked blobs score higher on average; a third of the images are normal."""
    rng = np.random.default_rng(seed)
    images = []
    for index in range(count):
        scores = rng.normal(size=(size, size))
        if index % 3 == 0:
            images.append((scores, None))
            continue
        mask = np.zeros((size, size), dtype=bool)
        for _ in range(rng.integers(1, 4)):
            top, left = rng.integers(0, size - 6, size=2)
            height, width = rng.integers(2, 7, size=2)
            mask[top : top + height, left : left + width] = True
        scores[mask] += rng.uniform(0.5, 2.5)
        images.append((scores, mask))
    return images


def accumulate(images, **kwargs) -> PixelMetrics:
    metrics = PixelMetrics(**kwargs)
    for scores, mask in images:
        metrics.update(scores, mask)
    return metrics


def reference_aupro(images, max_fpr: float = 0.3, num_thresholds: int = 3000) -> float:
    """Direct MVTec AD definition: sweep thresholds, mean overlap over 8-connected regions vs FPR."""
    normal_scores, regions = [], []
    for scores, mask in images:
        mask = np.zeros(scores.shape, bool) if mask is None else mask
        normal_scores.append(scores[~mask])
        labelled, count = ndimage.label(mask, structure=np.ones((3, 3)))
        regions.extend(scores[labelled == label] for label in range(1, count + 1))
    normal = np.concatenate(normal_scores)
    everything = np.concatenate([normal, *regions])
    thresholds = np.linspace(everything.max(), everything.min(), num_thresholds)
    fpr = np.array([0.0] + [np.mean(normal >= t) for t in thresholds])
    pro = np.array([0.0] + [np.mean([np.mean(region >= t) for region in regions]) for t in thresholds])
    keep = fpr <= max_fpr
    area = np.sum(np.diff(fpr[keep]) * (pro[keep][1:] + pro[keep][:-1]) / 2)
    last, after = np.flatnonzero(keep)[-1], np.flatnonzero(~keep)[0]
    pro_at_max = np.interp(max_fpr, fpr[[last, after]], pro[[last, after]])
    area += (max_fpr - fpr[last]) * (pro[last] + pro_at_max) / 2
    return area / max_fpr


def flattened(images) -> tuple[np.ndarray, np.ndarray]:
    labels = np.concatenate([np.zeros(s.size, bool) if m is None else m.ravel() for s, m in images])
    scores = np.concatenate([s.ravel() for s, _ in images])
    return labels, scores


# --- image-level metrics ---------------------------------------------------------------------------


def test_image_auroc_matches_sklearn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=200)
    scores = rng.normal(size=200) + labels
    assert image_auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_image_auroc_rejects_a_single_class():
    with pytest.raises(ValueError, match="only one class"):
        image_auroc([1, 1, 1], [0.1, 0.2, 0.3])


def test_image_metrics_reject_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\(3,\).*\(2,\)"):
        image_auroc([0, 1, 1], [0.1, 0.2])


def test_f1_max_hand_computed():
    # Descending: 0.9(1) 0.8(1) 0.5(0) 0.4(0) 0.35(1) 0.1(0); the top two give F1 = 2*2 / (2+3) = 0.8.
    labels = [0, 0, 1, 1, 0, 1]
    scores = [0.1, 0.4, 0.35, 0.8, 0.5, 0.9]
    assert f1_max(labels, scores) == pytest.approx((0.8, 0.8))


def test_f1_max_treats_tied_scores_together_and_matches_sklearn():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, size=300)
    scores = np.round(rng.normal(size=300) + labels, 1)  # many ties
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    with np.errstate(invalid="ignore"):
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))[:-1]
    best, threshold = f1_max(labels, scores)
    assert best == pytest.approx(f1.max())
    assert threshold == pytest.approx(thresholds[np.argmax(f1)])


def test_threshold_metrics():
    result = threshold_metrics([1, 1, 0, 0, 1], [1, 0, 1, 0, 1])
    assert result == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "false_alarm_rate": 1 / 2})
    assert threshold_metrics([0, 0], [0, 0]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "false_alarm_rate": 0.0}
    assert threshold_metrics([1, 1], [1, 0])["false_alarm_rate"] == 0.0  # no normal image: none flagged


# --- pixel-level metrics ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pixel_auroc_matches_sklearn(seed):
    images = random_images(seed)
    labels, scores = flattened(images)
    assert accumulate(images).pixel_auroc() == pytest.approx(roc_auc_score(labels, scores), abs=1e-3)


def test_pixel_auroc_survives_range_growth_in_both_directions():
    # The first map spans a tiny range, so later maps force many doublings up and down.
    images = random_images(3)
    images[0] = (images[0][0] * 1e-3, images[0][1])
    images.insert(0, (np.full((32, 32), 0.25), None))  # constant first map: zero initial span
    labels, scores = flattened(images)
    assert accumulate(images).pixel_auroc() == pytest.approx(roc_auc_score(labels, scores), abs=1e-3)


def test_given_score_range_is_only_a_starting_point():
    images = random_images(4)
    labels, scores = flattened(images)
    metrics = accumulate(images, score_range=(0.0, 1.0))
    assert metrics.pixel_auroc() == pytest.approx(roc_auc_score(labels, scores), abs=1e-3)
    assert metrics.aupro() == pytest.approx(reference_aupro(images), abs=1e-2)


def test_aupro_is_one_for_a_perfect_map():
    mask = np.zeros((20, 20), bool)
    mask[2:6, 2:6] = mask[12:18, 10:15] = True
    metrics = PixelMetrics()
    metrics.update(mask.astype(float), mask)
    metrics.update(np.zeros((20, 20)), None)
    assert metrics.aupro() == pytest.approx(1.0)
    assert metrics.pixel_auroc() == pytest.approx(1.0)


def test_aupro_averages_over_regions_not_pixels():
    # A large region scored highest and a small region scored lowest: PRO is 0.5 at every FPR < 1,
    # whatever the regions' sizes, while normal pixels spread evenly in between.
    rng = np.random.default_rng(5)
    scores = rng.uniform(0.1, 0.9, size=(40, 40))
    mask = np.zeros((40, 40), bool)
    mask[2:20, 2:20] = True  # found: 324 pixels
    mask[30:33, 30:33] = True  # missed: 9 pixels
    scores[2:20, 2:20] = 1.0
    scores[30:33, 30:33] = 0.0
    metrics = PixelMetrics()
    metrics.update(scores, mask)
    assert metrics.aupro() == pytest.approx(0.5, abs=1e-3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_aupro_matches_brute_force_reference(seed):
    images = random_images(seed)
    assert accumulate(images).aupro() == pytest.approx(reference_aupro(images), abs=1e-2)


def test_regions_touching_diagonally_are_one_region():
    # 8-connectivity: two diagonal pixels form one region, so finding one of them gives PRO 0.5, not 1.
    mask = np.zeros((10, 10), bool)
    mask[4, 4] = mask[5, 5] = True
    scores = np.linspace(0.1, 0.9, 100).reshape(10, 10)
    scores[4, 4], scores[5, 5] = 1.0, 0.0
    metrics = PixelMetrics()
    metrics.update(scores, mask)
    assert metrics.aupro() == pytest.approx(0.5, abs=1e-3)


def test_memory_stays_bounded_while_streaming():
    def array_bytes(metrics: PixelMetrics) -> int:
        return sum(value.nbytes for value in vars(metrics).values() if isinstance(value, np.ndarray))

    metrics = PixelMetrics(num_bins=1000)
    images = random_images(6, count=300, size=16)
    metrics.update(*images[0])
    size_after_one = array_bytes(metrics)
    for scores, mask in images[1:]:
        metrics.update(scores * 10, mask)  # also forces the range to grow
    assert array_bytes(metrics) == size_after_one == 3 * 1000 * 8
    labels, scores = flattened([images[0]] + [(s * 10, m) for s, m in images[1:]])
    assert metrics.pixel_auroc() == pytest.approx(roc_auc_score(labels, scores), abs=1e-2)


def test_update_rejects_mismatched_shapes_naming_them():
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(5, 4\)"):
        PixelMetrics().update(np.zeros((4, 5)), np.zeros((5, 4), bool))


def test_update_rejects_non_finite_and_non_2d_maps():
    with pytest.raises(ValueError, match="NaN"):
        PixelMetrics().update(np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError, match=r"\(2, 2, 3\)"):
        PixelMetrics().update(np.zeros((2, 2, 3)))


def test_metrics_need_both_kinds_of_pixels():
    metrics = PixelMetrics()
    metrics.update(np.random.default_rng(0).normal(size=(8, 8)), None)
    with pytest.raises(ValueError, match="anomalous"):
        metrics.pixel_auroc()
    with pytest.raises(ValueError, match="regions"):
        metrics.aupro()


def test_invalid_settings_are_rejected():
    with pytest.raises(ValueError, match="num_bins"):
        PixelMetrics(num_bins=7)
    with pytest.raises(ValueError, match="max_fpr"):
        PixelMetrics(max_fpr=0.0)
    with pytest.raises(ValueError, match="score_range"):
        PixelMetrics(score_range=(1.0, 1.0))
