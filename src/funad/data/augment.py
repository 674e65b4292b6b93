"""FUN-AD*: synthetic anomalies made from the training images, written as image files.

They are written as PNGs so the ordinary extraction path (and its content-addressed feature
cache) handles them like any other training image; the same images, seed and ratio give the
same bytes, so a repeated run finds their features in the cache.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from funad.data.images import load_image, to_array
from funad.data.synthetic import synthesize_anomalies

logger = logging.getLogger(__name__)


class _LazyImages(Sequence):
    """The training images as arrays, each read only when a synthetic anomaly uses it
    (a few hundred full-resolution images would not fit in memory together)."""

    def __init__(self, paths: Sequence[Path]):
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray:  # type: ignore[override]  # no slices
        return to_array(load_image(self.paths[index]))


def synthetic_anomaly_count(num_images: int, ratio: float) -> int:
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"synthetic_ratio must lie in [0, 1], got {ratio}")
    return int(round(ratio * num_images))


def write_synthetic_anomalies(paths: Sequence[Path], ratio: float, seed: int, folder: Path) -> list[Path]:
    """Write ``round(ratio * len(paths))`` synthetic anomalies of ``paths`` into ``folder``; their files.

    Nothing is written (and no image read) when the count is 0.
    """
    count = synthetic_anomaly_count(len(paths), ratio)
    if count == 0:
        return []
    anomalies = synthesize_anomalies(_LazyImages(paths), count, np.random.default_rng(seed))
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for index, (image, _mask) in enumerate(anomalies):
        path = folder / f"synthetic_{index:04d}.png"
        Image.fromarray(image).save(path)
        written.append(path)
    logger.info("FUN-AD*: added %d synthetic anomalies to %d training images", count, len(paths))
    return written
