"""A decision threshold and a contamination estimate from the training images' scores alone.

FUN-AD trains on an unlabelled set that may contain defective images, so the training scores
themselves say where "normal" ends: a contaminated set gives a bimodal score distribution (a
large normal mode, a small anomalous mode above it), a clean one a single mode.

Method (label-free, deterministic):

1. Standardise the scores (median and standard deviation) so the mixture's variance floor does
   not swamp the tiny spreads sigmoid scores can have.
2. Fit a one- and a two-component 1-D Gaussian mixture. The two-component fit starts from the
   split the final memory bank implies (``judged_normal``: the images the bank treats as normal
   versus the rest), so the mixture refines the method's own split instead of finding an
   unrelated one.
3. If the two-component fit has the lower BIC, its upper component holds less than half of the
   images (contamination is a minority by assumption), and the two means are separated, the
   threshold is where the upper component's posterior crosses 1/2 between the two means and
   the contamination is the share of images above it.
4. Otherwise no anomalous mode is visible: the threshold is the upper robust tail of the single
   mode, median + w * 1.4826 * MAD (w robust standard deviations; ``tail_widths``, 2 by
   default), and the contamination is the share of images above that. Contaminants that overlap
   the normal images' upper tail (MVTec screw, magnetic tile, the semantic toy) leave no separate
   mode; there w = 3 flagged under half of the test anomalies, w = 2 nearly two thirds of magnetic
   tile's for 5 % of its good images (docs/outputs.md, "Where the tail starts").

An image is anomalous when its score is strictly above the threshold, so identical scores
(threshold = that score) label every image normal. Why a mixture rather than the bank's
min-max split (``tau_m`` of the score range) directly: the bank split moves with the single
highest score, while the mixture uses the whole distribution. ``docs/outputs.md`` has the
measurement on planted distributions and the demo data that chose it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from funad.config import THRESHOLD_TAIL_WIDTHS

logger = logging.getLogger(__name__)

# 1.4826 * MAD estimates a Gaussian's standard deviation.
_MAD_TO_STD = 1.4826
# Fewer scores than this cannot support two mixture components with any confidence.
_MIN_SCORES_FOR_MIXTURE = 6
# Two modes closer than this many pooled standard deviations are one mode with a long tail.
_MIN_SEPARATION = 2.0


@dataclass(frozen=True)
class ThresholdEstimate:
    threshold: float  # anomalous if score > threshold
    contamination: float  # estimated share of anomalous training images
    method: str  # "mixture" or "robust tail"


def above_threshold(scores: ArrayLike, threshold: float) -> np.ndarray:
    """The labels' rule, wherever scores are labelled (fit, predict, the ONNX runtime, audits, benchmarks):
    anomalous where a score is above ``threshold``, compared in float64 so that a float32 score equal to the
    saved threshold is not pushed across it."""
    return np.asarray(scores, dtype=np.float64) > threshold


def median_and_deviation(scores: np.ndarray) -> tuple[float, float]:
    """The median and the median absolute deviation of ``scores``: a contaminated set's centre and spread,
    which its tail of anomalies barely moves."""
    median = float(np.median(scores))
    return median, float(np.median(np.abs(scores - median)))


def robust_tail_threshold(scores: np.ndarray, widths: float = THRESHOLD_TAIL_WIDTHS) -> float:
    median, mad = median_and_deviation(scores)
    return median + widths * _MAD_TO_STD * mad


def estimate_threshold(scores: ArrayLike, judged_normal: ArrayLike | None = None,
                       tail_widths: float = THRESHOLD_TAIL_WIDTHS) -> ThresholdEstimate:
    """Threshold and contamination from training ``scores`` (higher = more anomalous).

    ``judged_normal`` (bool per score, optional) is the memory bank's split, used to start the
    two-component mixture; ``tail_widths``: robust standard deviations above the median where the
    threshold falls when no separate anomalous mode shows.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if scores.size == 0:
        raise ValueError("cannot estimate a threshold from zero training scores")
    if not np.isfinite(scores).all():
        raise ValueError("training scores contain NaN or infinite values; cannot estimate a threshold")
    mixture = _mixture_threshold(scores, judged_normal)
    if mixture is not None:
        return mixture
    threshold = robust_tail_threshold(scores, tail_widths)
    return ThresholdEstimate(threshold, float(np.mean(above_threshold(scores, threshold))), "robust tail")


def _mixture_threshold(scores: np.ndarray, judged_normal: ArrayLike | None) -> ThresholdEstimate | None:
    """The two-mode threshold, or None when the scores do not show a separate anomalous mode."""
    spread = float(np.std(scores))
    if scores.size < _MIN_SCORES_FOR_MIXTURE or len(np.unique(scores)) < 3 or spread == 0.0:
        return None
    from sklearn.mixture import GaussianMixture  # scikit-learn (1 s to import) only in fit, not predict

    centre = float(np.median(scores))
    standardised = ((scores - centre) / spread)[:, None]
    single = GaussianMixture(1, random_state=0).fit(standardised)
    pair = GaussianMixture(2, random_state=0, means_init=_initial_means(standardised[:, 0], judged_normal),
                           max_iter=200).fit(standardised)
    upper = int(np.argmax(pair.means_[:, 0]))
    lower = 1 - upper
    means = pair.means_[:, 0]
    pooled_std = float(np.sqrt(pair.covariances_.ravel().mean()))
    separated = (means[upper] - means[lower]) >= _MIN_SEPARATION * pooled_std
    if pair.bic(standardised) >= single.bic(standardised) or pair.weights_[upper] >= 0.5 or not separated:
        logger.debug("scores show no separate anomalous mode (BIC %.1f vs %.1f, upper weight %.2f)",
                     pair.bic(standardised), single.bic(standardised), pair.weights_[upper])
        return None
    grid = np.linspace(means[lower], means[upper], 2001)[:, None]
    posterior = pair.predict_proba(grid)[:, upper]
    crossing = grid[int(np.argmax(posterior >= 0.5)), 0]
    threshold = float(crossing * spread + centre)
    return ThresholdEstimate(threshold, float(np.mean(above_threshold(scores, threshold))), "mixture")


def _initial_means(standardised: np.ndarray, judged_normal: ArrayLike | None) -> np.ndarray | None:
    """Component means from the memory bank's split; None (k-means start) if it has an empty side."""
    if judged_normal is None:
        return None
    judged_normal = np.asarray(judged_normal, dtype=bool)
    if judged_normal.shape != standardised.shape:
        raise ValueError(f"judged_normal has shape {judged_normal.shape}, scores {standardised.shape}")
    if judged_normal.all() or not judged_normal.any():
        return None
    return np.array([[standardised[judged_normal].mean()], [standardised[~judged_normal].mean()]])
