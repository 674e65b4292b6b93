"""Bilinear resizing as a matrix per axis: one rule for the maps (torch) and the ONNX runtime (numpy only).

The rule is torch's ``interpolate(mode="bilinear", align_corners=False)``: half-pixel centres,
edges clamped, no antialiasing.
"""

from __future__ import annotations

import numpy as np


def interpolation_matrix(size: int, new_size: int) -> np.ndarray:
    """float32 ``[new_size, size]`` weights: each output sample's two nearest inputs, at half-pixel centres."""
    source = np.maximum((np.arange(new_size) + 0.5) * (size / new_size) - 0.5, 0.0)
    lower = np.minimum(np.floor(source).astype(np.int64), size - 1)
    upper = np.minimum(lower + 1, size - 1)
    fraction = (source - lower).astype(np.float32)
    weights = np.zeros((new_size, size), dtype=np.float32)
    outputs = np.arange(new_size)
    np.add.at(weights, (outputs, lower), 1 - fraction)
    np.add.at(weights, (outputs, upper), fraction)
    return weights


def resize_bilinear(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """float32 ``[height, width]`` from ``[h, w]``."""
    rows = interpolation_matrix(array.shape[0], height)
    columns = interpolation_matrix(array.shape[1], width)
    return (rows @ array.astype(np.float32) @ columns.T).astype(np.float32)
