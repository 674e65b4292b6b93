"""The label-free threshold on planted score distributions."""

import numpy as np
import pytest

from funad.method.threshold import estimate_threshold


def _planted(seed: int, n_normal: int, n_anomalous: int, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    normal = rng.normal(0.2, 0.03, n_normal)
    anomalous = rng.normal(0.7, 0.08, n_anomalous)
    labels = np.r_[np.zeros(n_normal, bool), np.ones(n_anomalous, bool)]
    return np.r_[normal, anomalous] * scale, labels


@pytest.mark.parametrize("n_anomalous", [10, 25])
def test_bimodal_scores_split_between_the_modes(n_anomalous):
    scores, labels = _planted(0, 200 - n_anomalous, n_anomalous)
    estimate = estimate_threshold(scores)
    assert estimate.method == "mixture"
    assert scores[~labels].max() < estimate.threshold < scores[labels].min()
    assert estimate.contamination == pytest.approx(n_anomalous / 200, abs=0.01)


def test_tiny_score_scale_is_handled():
    # sigmoid scores can all sit within 1e-4 of each other; the split must not depend on the unit
    scores, labels = _planted(1, 180, 20, scale=1e-4)
    estimate = estimate_threshold(scores)
    assert scores[~labels].max() < estimate.threshold < scores[labels].min()


def test_memory_bank_split_starts_the_mixture():
    scores, labels = _planted(2, 190, 10)
    estimate = estimate_threshold(scores, judged_normal=~labels)
    assert scores[~labels].max() < estimate.threshold < scores[labels].min()
    with pytest.raises(ValueError, match="judged_normal has shape"):
        estimate_threshold(scores, judged_normal=np.ones(3, bool))


def test_clean_unimodal_scores_flag_only_the_tail_beyond_two_robust_deviations():
    scores = np.random.default_rng(3).normal(0.3, 0.05, 3000)
    estimate = estimate_threshold(scores)
    assert estimate.method == "robust tail"
    assert estimate.threshold == pytest.approx(0.3 + 2 * 0.05, abs=0.01)
    assert 0.01 < estimate.contamination < 0.04  # a Gaussian's share beyond 2 standard deviations: 2.3 %
    wider = estimate_threshold(scores, tail_widths=3.0)
    assert wider.threshold == pytest.approx(0.3 + 3 * 0.05, abs=0.01) and wider.contamination < 0.005


def test_the_tail_widths_reach_the_fitted_threshold_and_older_models_keep_three():
    from funad.config import FunADConfig

    assert FunADConfig().threshold_tail_widths == 2.0
    saved = {k: v for k, v in FunADConfig().to_dict().items() if k != "threshold_tail_widths"}
    assert FunADConfig.from_dict(saved).threshold_tail_widths == 3.0  # how models saved before it were thresholded
    with pytest.raises(ValueError, match="threshold_tail_widths"):
        FunADConfig(threshold_tail_widths=0)


@pytest.mark.parametrize("scores", [np.full(20, 0.37), np.full(1, 2.0), np.array([0.1, 0.1, 0.1, 0.9])])
def test_degenerate_scores_give_a_finite_threshold(scores):
    estimate = estimate_threshold(scores)
    assert np.isfinite(estimate.threshold) and np.isfinite(estimate.contamination)
    if np.ptp(scores) == 0:
        assert estimate.threshold == scores[0] and estimate.contamination == 0.0


def test_bad_scores_are_rejected():
    with pytest.raises(ValueError, match="zero training scores"):
        estimate_threshold([])
    with pytest.raises(ValueError, match="NaN"):
        estimate_threshold([0.1, np.nan, 0.2])
