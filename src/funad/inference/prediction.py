"""What predicting one image returns, and the size of its map: shared by the torch model and the ONNX runtime.

Free of torch, so that a command scoring with an exported ONNX model (:mod:`funad.runtime`) starts fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

#: The size of predicted maps: the image's own, the backbone's input size, or (height, width).
MapSize = Literal["original", "input"] | tuple[int, int]


@dataclass
class Prediction:
    """One input image's result; an unreadable image gets ``error`` (why), a NaN score and no map."""

    path: Path | None  # None for an in-memory image (array or PIL image)
    score: float
    anomaly_map: np.ndarray | None  # float32 [height, width]
    error: str | None = None
    image: Image.Image | None = None  # the decoded RGB image, when predict was asked to keep it (keep_images)


def map_shape(map_size: MapSize, image_shape: tuple[int, int], input_size: int) -> tuple[int, int]:
    """(height, width) of the map of an image of ``image_shape`` (height, width)."""
    if map_size == "original":
        return image_shape
    if map_size == "input":
        return input_size, input_size
    return map_size
