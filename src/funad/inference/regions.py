"""Defect regions without labels: a pixel threshold read from the training images, then connected regions.

The pixel threshold is a high quantile of the patch scores of training images the model labels
normal: those the scorer did not learn from where at least three remain (:func:`funad.model.pixel_reference_images`).
The default bank learns from every image, so there the reference images are scored with their own
entries in the bank. Leaving those out, as a new image is scored, was measured and not kept: the
masks' pixel F1 rose on MVTec bottle (0.722 to 0.728) and fell on magnetic tile (0.183 to 0.163;
README, "Defect regions, label-free"). A pixel of an anomalous image's map above the threshold
belongs to the defect mask; the mask's 8-connected components are the regions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from funad.utils.masks import EIGHT_CONNECTED

if TYPE_CHECKING:  # torch only where a fit reads the threshold: regions of a map need numpy and scipy alone
    from funad.features.containers import MethodFeatures
    from funad.inference.scorers.base import PatchScorer

#: The share of reference patches below the pixel threshold (see the module docstring).
PIXEL_QUANTILE = 0.999
#: The threshold is read from at most this many reference images, drawn at random: 256 000
#: patch scores at 256 patches per image put the 0.999 quantile on 256 patches, enough to pin it
#: down, while scoring every reference image would cost as much as predicting the training set.
PIXEL_REFERENCE_MAX_IMAGES = 1000
_BATCH = 32  # images scored at a time while reading the threshold


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


def training_pixel_threshold(scorer: PatchScorer, features: MethodFeatures, reference: np.ndarray,
                             quantile: float = PIXEL_QUANTILE, *, max_images: int = PIXEL_REFERENCE_MAX_IMAGES,
                             seed: int = 0, shown: np.ndarray | None = None) -> float:
    """The ``quantile`` of the patch scores of the training images ``reference`` (indices into ``features``).

    Beyond ``max_images`` reference images, of a uniform sample of that many (``seed``). ``shown``:
    bool ``[len(features), K]``, the patches each image's map shows (a letterbox's margins are not);
    all if None.
    """
    if len(reference) > max_images:
        reference = np.sort(np.random.default_rng(seed).choice(reference, max_images, replace=False))
    import torch

    scores = np.empty((len(reference), features.num_patches), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, len(reference), _BATCH):
            batch = features.take(reference[start:start + _BATCH])
            scores[start:start + len(batch)] = scorer.score_patches(batch).float().cpu().numpy()
    return float(np.quantile(scores if shown is None else scores[shown[reference]], quantile))


def defect_mask(anomaly_map: np.ndarray, threshold: float) -> np.ndarray:
    """bool ``[H, W]``: the map's pixels above ``threshold``."""
    return np.asarray(anomaly_map > threshold)


def defect_regions(anomaly_map: np.ndarray, threshold: float) -> tuple[np.ndarray, list[Region]]:
    """An anomalous image's defect mask (pixels above ``threshold``) and its connected regions, largest first."""
    mask = defect_mask(anomaly_map, threshold)
    return mask, find_regions(anomaly_map, mask)


def find_regions(anomaly_map: np.ndarray, mask: np.ndarray) -> list[Region]:
    """The connected regions of ``mask`` with their boxes, areas and peak map values, largest first."""
    from scipy import ndimage  # here, not at the top: 0.24 s of every `funad predict`'s start, for anomalous images

    labels, _ = ndimage.label(mask, structure=EIGHT_CONNECTED)
    regions = [_region(anomaly_map, labels[box] == label, box)
               for label, box in enumerate(ndimage.find_objects(labels), start=1)]
    return sorted(regions, key=lambda region: -region.area)


def _region(anomaly_map: np.ndarray, inside: np.ndarray, box: tuple[slice, slice]) -> Region:
    """A region from its bounding ``box`` and the pixels ``inside`` it that belong to it.

    Reading areas and peaks box by box keeps a 24-megapixel map's temporaries at the box's
    size; ``np.bincount`` and ``ndimage.maximum`` over the whole label image took two int64
    copies of it (measured: 370 MB at 24 MP).
    """
    rows, columns = box
    peak = np.max(anomaly_map[box], where=inside, initial=-np.inf)
    return Region(int(columns.start), int(rows.start), int(columns.stop - columns.start), int(rows.stop - rows.start),
                  int(np.count_nonzero(inside)), float(peak))


def outline(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """bool ``[H, W]``: the pixels of ``mask`` within ``width`` pixels of its border."""
    from scipy import ndimage

    inner = ndimage.binary_erosion(mask, structure=EIGHT_CONNECTED, iterations=width, border_value=0)
    return np.asarray(mask & ~inner)
