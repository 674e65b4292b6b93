"""Defect regions without labels: a pixel threshold read from the training images, then connected regions.

The pixel threshold is a high quantile of the patch scores of training images the model labels
normal and whose patches the scorer did not learn from (a nearest-neighbour bank scores its own
patches about 0, which would pull the quantile down). A pixel of an anomalous image's map above
it belongs to the defect mask; the mask's 8-connected components are the regions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy import ndimage

from funad.features.containers import MethodFeatures
from funad.inference.scorers.base import PatchScorer

#: The share of reference patches below the pixel threshold (see the module docstring).
PIXEL_QUANTILE = 0.999
_BATCH = 32  # images scored at a time while reading the threshold
_CONNECTIVITY = np.ones((3, 3), dtype=bool)  # diagonal neighbours join a region


@dataclass(frozen=True)
class Region:
    """One connected defect region, in pixels of the map it was found on."""

    x: int  # left column of the bounding box
    y: int  # top row
    width: int
    height: int
    area: int  # pixels in the region
    peak: float  # the highest map value inside it

    def to_dict(self) -> dict[str, int | float]:
        return asdict(self)


@torch.no_grad()
def training_pixel_threshold(scorer: PatchScorer, features: MethodFeatures, reference: np.ndarray,
                             quantile: float = PIXEL_QUANTILE) -> float:
    """The ``quantile`` of the patch scores of the training images ``reference`` (indices into ``features``)."""
    scores = [scorer.score_patches(features.take(reference[start:start + _BATCH])).float().flatten()
              for start in range(0, len(reference), _BATCH)]
    return float(np.quantile(torch.cat(scores).cpu().numpy(), quantile))


def defect_mask(anomaly_map: np.ndarray, threshold: float) -> np.ndarray:
    """bool ``[H, W]``: the map's pixels above ``threshold``."""
    return np.asarray(anomaly_map > threshold)


def find_regions(anomaly_map: np.ndarray, mask: np.ndarray) -> list[Region]:
    """The connected regions of ``mask`` with their boxes, areas and peak map values, largest first."""
    labels, count = ndimage.label(mask, structure=_CONNECTIVITY)
    if count == 0:
        return []
    areas = np.bincount(labels.ravel(), minlength=count + 1)
    peaks = ndimage.maximum(anomaly_map, labels, index=np.arange(1, count + 1))
    regions = [Region(int(box[1].start), int(box[0].start), int(box[1].stop - box[1].start),
                      int(box[0].stop - box[0].start), int(areas[label]), float(peak))
               for label, (box, peak) in enumerate(zip(ndimage.find_objects(labels), peaks), start=1)]
    return sorted(regions, key=lambda region: -region.area)


def outline(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """bool ``[H, W]``: the pixels of ``mask`` within ``width`` pixels of its border."""
    inner = ndimage.binary_erosion(mask, structure=_CONNECTIVITY, iterations=width, border_value=0)
    return np.asarray(mask & ~inner)
