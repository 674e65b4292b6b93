"""Evaluation metrics for anomaly detection (used only where labels exist, never for training)."""

from funad.metrics.anomaly import PixelMetrics, f1_max, image_auroc, threshold_metrics

__all__ = ["PixelMetrics", "f1_max", "image_auroc", "threshold_metrics"]
