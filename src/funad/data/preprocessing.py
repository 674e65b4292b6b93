"""An RGB image as a backbone input, in numpy only: extraction (torch) and the ONNX runtime (no torch) share it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image


def normalised_array(image: Image.Image, size: int, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """float32 ``[3, size, size]``: the whole image resized (bilinear) to a square, scaled to 0..1, normalised."""
    resized = image.resize((size, size), Image.Resampling.BILINEAR)
    array = np.asarray(resized, dtype=np.float32) / 255.0
    normalised = (array - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(normalised.transpose(2, 0, 1))
