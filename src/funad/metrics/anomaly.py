"""Anomaly-detection metrics: image AUROC and F1-max, and streaming pixel AUROC and AUPRO.

Image-level metrics take one score per image and are computed exactly. Pixel-level metrics are
accumulated image by image into fixed-size histograms (:class:`PixelMetrics`), so evaluating
thousands of full-resolution anomaly maps never needs them all in memory at once.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from funad.utils.masks import EIGHT_CONNECTED


def _paired(labels: ArrayLike, values: ArrayLike, values_name: str) -> tuple[np.ndarray, np.ndarray]:
    """``labels`` as a flat bool array and ``values`` as a flat array, after checking they pair up."""
    labels_array, values_array = np.asarray(labels), np.asarray(values)
    if labels_array.shape != values_array.shape:
        raise ValueError(
            f"labels shape {labels_array.shape} and {values_name} shape {values_array.shape} differ"
        )
    if not np.isin(labels_array, (0, 1)).all():
        raise ValueError("labels must be 0 (normal) or 1 (anomalous)")
    return labels_array.ravel().astype(bool), values_array.ravel()


def _finite_scores(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    labels_array, scores_array = _paired(labels, scores, "scores")
    scores_array = scores_array.astype(np.float64)
    if not np.isfinite(scores_array).all():
        raise ValueError("scores contain NaN or infinite values")
    return labels_array, scores_array


def image_auroc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve of per-image ``scores`` (higher = more anomalous) against 0/1 ``labels``."""
    labels_array, scores_array = _finite_scores(labels, scores)
    if labels_array.all() or not labels_array.any():
        raise ValueError("AUROC needs both normal (0) and anomalous (1) labels; only one class is present")
    return float(roc_auc_score(labels_array, scores_array))


def f1_max(labels: ArrayLike, scores: ArrayLike) -> tuple[float, float]:
    """The best F1 over all thresholds, and that threshold (images with ``score >= threshold`` are anomalous).

    This is anomalib's image F1-max: an optimistic, label-informed operating point that bounds what
    any label-free threshold can reach.
    """
    labels_array, scores_array = _finite_scores(labels, scores)
    num_anomalous = int(labels_array.sum())
    if num_anomalous == 0:
        raise ValueError("F1 needs at least one anomalous (1) label")
    order = np.argsort(-scores_array, kind="stable")
    sorted_scores = scores_array[order]
    true_positives = np.cumsum(labels_array[order])
    # "score >= t" selects a prefix of the sorted scores that ends at the last copy of t.
    prefix_ends = np.flatnonzero(np.r_[sorted_scores[1:] != sorted_scores[:-1], True])
    num_predicted = prefix_ends + 1
    # F1 = 2 TP / (2 TP + FP + FN) = 2 TP / (predicted positives + actual positives).
    f1 = 2 * true_positives[prefix_ends] / (num_predicted + num_anomalous)
    best = int(np.argmax(f1))
    return float(f1[best]), float(sorted_scores[prefix_ends[best]])


def threshold_metrics(labels: ArrayLike, predicted: ArrayLike) -> dict[str, float]:
    """Precision, recall, F1 and false-alarm rate (the share of normal images predicted anomalous) of binary
    ``predicted`` against ``labels`` (1 = anomalous).

    Used to judge a fixed (for instance label-free) threshold; an undefined ratio is reported as 0.
    """
    labels_array, predicted_array = _paired(labels, predicted, "predicted")
    if not np.isin(predicted_array, (0, 1)).all():
        raise ValueError("predicted must be 0 (normal) or 1 (anomalous)")
    predicted_array = predicted_array.astype(bool)
    true_positives = int(np.sum(labels_array & predicted_array))
    false_positives = int(np.sum(~labels_array & predicted_array))
    false_negatives = int(np.sum(labels_array & ~predicted_array))
    return {
        "precision": _ratio(true_positives, true_positives + false_positives),
        "recall": _ratio(true_positives, true_positives + false_negatives),
        "f1": _ratio(2 * true_positives, 2 * true_positives + false_positives + false_negatives),
        "false_alarm_rate": _ratio(false_positives, int(np.sum(~labels_array))),
    }


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


class PixelMetrics:
    """Streaming pixel AUROC and AUPRO over many (anomaly map, mask) pairs, in bounded memory.

    Every pixel score is put into one of ``num_bins`` equal-width bins, and three histograms are kept:
    normal pixels, anomalous pixels, and anomalous pixels weighted by ``1 / |region|`` (the size of the
    8-connected ground-truth region that holds them). The last one is the trick of the MVTec AD
    evaluation code: the mean per-region overlap at threshold ``t`` is the weighted count of bins at or
    above ``t`` divided by the number of regions, so no per-region state is needed. Memory is
    ``3 * num_bins`` numbers whatever the number of images or regions.

    The score range need not be known in advance. ``score_range`` (or, when it is None, the first
    map's minimum and maximum) only sets the initial range; when a later score falls outside it, the
    range is doubled towards that side and adjacent bin pairs are merged. Doubling keeps the old bin
    edges as new bin edges, so counts are re-binned exactly, never smeared; the final bins are at most
    about four times wider than bins fitted to the true overall range.

    Binning only merges scores that fall in the same bin: pixel AUROC counts such pairs as ties, and
    the PRO curve is sampled at bin edges and joined linearly. With the default 10 000 bins both differ
    from the exact values by far less than 1e-3 on ordinary maps.
    """

    def __init__(
        self,
        num_bins: int = 10_000,
        score_range: tuple[float, float] | None = None,
        max_fpr: float = 0.3,
    ) -> None:
        if num_bins < 2 or num_bins % 2:
            raise ValueError(f"num_bins must be an even number >= 2 (bins merge in pairs), got {num_bins}")
        if not 0 < max_fpr <= 1:
            raise ValueError(f"max_fpr must be in (0, 1], got {max_fpr}")
        self.num_bins = num_bins
        self.max_fpr = max_fpr
        self._low: float | None = None
        self._high: float | None = None
        if score_range is not None:
            low, high = float(score_range[0]), float(score_range[1])
            if not (np.isfinite(low) and np.isfinite(high) and low < high):
                raise ValueError(f"score_range must be finite with low < high, got {score_range}")
            self._low, self._high = low, high
        self._normal = np.zeros(num_bins, dtype=np.int64)
        self._anomalous = np.zeros(num_bins, dtype=np.int64)
        self._region_overlap = np.zeros(num_bins, dtype=np.float64)
        self._num_regions = 0

    def update(self, anomaly_map: ArrayLike, mask: ArrayLike | None = None) -> None:
        """Add one image: its (H, W) anomaly map and its (H, W) ground-truth mask (None = normal image)."""
        scores = np.asarray(anomaly_map, dtype=np.float64)
        if scores.ndim != 2 or scores.size == 0:
            raise ValueError(f"anomaly_map must be a non-empty 2-D (H, W) array, got shape {scores.shape}")
        if mask is None:
            anomalous = np.zeros(scores.shape, dtype=bool)
        else:
            anomalous = np.asarray(mask) != 0
            if anomalous.shape != scores.shape:
                raise ValueError(f"anomaly_map shape {scores.shape} and mask shape {anomalous.shape} differ")
        if not np.isfinite(scores).all():
            raise ValueError("anomaly_map contains NaN or infinite values")

        self._cover(float(scores.min()), float(scores.max()))
        bins = self._bin_indices(scores)
        self._normal += np.bincount(bins[~anomalous], minlength=self.num_bins)
        self._anomalous += np.bincount(bins[anomalous], minlength=self.num_bins)
        regions, num_regions = ndimage.label(anomalous, structure=EIGHT_CONNECTED)
        if num_regions:
            region_sizes = np.bincount(regions.ravel())
            weights = 1.0 / region_sizes[regions[anomalous]]
            self._region_overlap += np.bincount(bins[anomalous], weights=weights, minlength=self.num_bins)
            self._num_regions += num_regions

    def pixel_auroc(self) -> float:
        """Probability that an anomalous pixel outscores a normal one (same-bin pairs count one half)."""
        normal = self._normal.astype(np.float64)
        anomalous = self._anomalous.astype(np.float64)
        if not normal.sum() or not anomalous.sum():
            raise ValueError(
                f"pixel AUROC needs normal and anomalous pixels; have {int(normal.sum())} normal "
                f"and {int(anomalous.sum())} anomalous"
            )
        normal_below = np.cumsum(normal) - normal
        wins = anomalous @ (normal_below + 0.5 * normal)
        return float(wins / (normal.sum() * anomalous.sum()))

    def aupro(self) -> float:
        """Area under the per-region-overlap curve up to ``max_fpr``, divided by ``max_fpr`` (perfect = 1).

        Follows the MVTec AD definition: at threshold ``t`` the PRO is the mean over all ground-truth
        regions of the fraction of their pixels scoring ``>= t``, and the FPR is the fraction of normal
        pixels (outside every mask, over all images) scoring ``>= t``.
        """
        num_normal = int(self._normal.sum())
        if self._num_regions == 0 or num_normal == 0:
            raise ValueError(
                f"AUPRO needs anomalous regions and normal pixels; have {self._num_regions} regions "
                f"and {num_normal} normal pixels"
            )
        # Thresholds run from above the highest bin down to each bin's lower edge.
        fpr = np.r_[0.0, np.cumsum(self._normal[::-1]) / num_normal]
        pro = np.r_[0.0, np.cumsum(self._region_overlap[::-1]) / self._num_regions]
        return _area_up_to(fpr, pro, self.max_fpr) / self.max_fpr

    def _cover(self, low: float, high: float) -> None:
        """Make the bin range include [low, high]: set it on first use, otherwise grow it by doubling."""
        if self._low is None or self._high is None:
            # A constant first map gives no span; any positive one works because the range can grow.
            span = high - low or max(abs(low), 1.0) * 1e-6
            self._low, self._high = low, low + span
            return
        while high > self._high:
            self._double(upward=True)
        while low < self._low:
            self._double(upward=False)

    def _double(self, upward: bool) -> None:
        """Double the bin width, extending the range up or down; old bin pairs merge into new bins."""
        assert self._low is not None and self._high is not None
        half = self.num_bins // 2
        for histogram in (self._normal, self._anomalous, self._region_overlap):
            merged = histogram.reshape(half, 2).sum(axis=1)
            histogram[:] = 0
            if upward:
                histogram[:half] = merged
            else:
                histogram[half:] = merged
        span = self._high - self._low
        if upward:
            self._high += span
        else:
            self._low -= span

    def _bin_indices(self, scores: np.ndarray) -> np.ndarray:
        """Bin index of each score; the range is closed, so the top edge belongs to the last bin."""
        assert self._low is not None and self._high is not None
        scale = self.num_bins / (self._high - self._low)
        indices = ((scores - self._low) * scale).astype(np.int64)
        return np.clip(indices, 0, self.num_bins - 1)


def _area_up_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoid area under y(x) (x non-decreasing, starting at 0) from 0 to ``x_max``.

    As in the MVTec AD evaluation code, the curve is interpolated linearly at ``x_max``.
    """
    inside = int(np.searchsorted(x, x_max, side="right"))  # points with x <= x_max
    xs, ys = x[:inside], y[:inside]
    area = float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2))
    if inside < len(x) and xs[-1] < x_max:
        x0, x1, y0, y1 = xs[-1], x[inside], ys[-1], y[inside]
        y_at_max = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0)
        area += float((x_max - x0) * (y0 + y_at_max) / 2)
    return area
