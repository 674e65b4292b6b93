"""Metrics of a prediction folder against MVTec-layout ground truth.

Layout (as in MVTec AD): a test image ``.../test/<type>/<name>.png`` is normal when ``<type>`` is
``good`` and anomalous otherwise; its mask is ``GROUND_TRUTH/<type>/<name>_mask.png`` (non-zero
pixels are defective). Normal images need no mask.
"""

from __future__ import annotations

import logging
from array import array
from pathlib import Path

import numpy as np

from funad.metrics import PixelMetrics, image_auroc, threshold_metrics
from funad.reports.prediction_folder import PredictionFolder
from funad.utils.masks import MVTEC_NORMAL_FOLDER, mvtec_mask_path, read_mask

logger = logging.getLogger(__name__)


def evaluate(folder: PredictionFolder, ground_truth: Path) -> dict[str, float]:
    """Image AUROC, precision/recall/F1 of the labels, and pixel AUROC where masks exist.

    One pass over the folder's images, a map at a time: what is kept per image is three numbers.
    """
    if not ground_truth.is_dir():
        raise FileNotFoundError(f"ground-truth folder {ground_truth} "
                                f"{'is not a folder' if ground_truth.exists() else 'does not exist'}")
    truth, scores, predicted = array("b"), array("d"), array("b")
    pixels, masks_found = PixelMetrics(), 0
    for image in folder.images():
        anomalous = image.path.parent.name != MVTEC_NORMAL_FOLDER
        truth.append(anomalous)
        scores.append(image.score)
        predicted.append(image.anomalous)
        mask = None
        if anomalous:
            path = mvtec_mask_path(ground_truth, image.path.parent.name, image.path)
            if not path.is_file():
                logger.warning("no mask %s for %s: left out of the pixel metrics", path, image.path)
                continue
            mask = read_mask(path)
            masks_found += 1
        if image.anomaly_map is None or not image.anomaly_map.is_file():
            logger.warning("anomaly map %s is missing: %s left out of the pixel metrics", image.anomaly_map, image.path)
            continue
        pixels.update(folder.read_map(image.anomaly_map), mask)
    labels = np.asarray(truth, dtype=int)
    results: dict[str, float] = {}
    if 0 < labels.sum() < len(labels):
        results["image AUROC"] = image_auroc(labels, np.asarray(scores))
    else:
        logger.warning("image AUROC needs normal ('%s' folder) and anomalous test images; only one kind found",
                       MVTEC_NORMAL_FOLDER)
    results.update({f"{name} at the threshold": value
                    for name, value in threshold_metrics(labels, np.asarray(predicted, dtype=int)).items()})
    if masks_found:
        results["pixel AUROC"] = pixels.pixel_auroc()
    return results
