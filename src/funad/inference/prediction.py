"""What predicting one image returns, and the size of its map: shared by the torch model and the ONNX runtime.

Free of torch, so that a command scoring with an exported ONNX model (:mod:`funad.runtime`) starts fast.
"""

from __future__ import annotations

import operator
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


def check_map_size(map_size: object) -> MapSize:
    """``map_size`` if it is one (``"original"``, ``"input"`` or a (height, width) of positive whole numbers), else
    a ValueError saying what is: at the call, not where the first map is drawn."""
    if map_size in ("original", "input"):
        return map_size
    if isinstance(map_size, (tuple, list)) and len(map_size) == 2:
        try:
            height, width = (operator.index(side) for side in map_size)  # numpy's integers too, not 2.0 or True
        except TypeError:
            height = width = 0
        if height > 0 and width > 0 and not any(isinstance(side, bool) for side in map_size):
            return height, width
    raise ValueError(f"map_size must be 'original', 'input' or a (height, width) of positive whole numbers, "
                     f"got {map_size!r}")


def map_shape(map_size: MapSize, image_shape: tuple[int, int], input_size: int) -> tuple[int, int]:
    """(height, width) of the map of an image of ``image_shape`` (height, width)."""
    if map_size == "original":
        return image_shape
    if map_size == "input":
        return input_size, input_size
    return map_size
