"""Scoring images with a model written by ``funad export --format onnx``: onnxruntime, numpy and pillow only.

Nothing here imports torch (nor funad's training stack), so a deployment installs only those
three packages besides funad. Images are read and preprocessed by the same code as
``funad predict`` (:mod:`funad.data.images`, :mod:`funad.data.preprocessing`); maps are resized to
each image's size with the same bilinear rule (half-pixel centres, no antialiasing) as torch's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime
from PIL import Image

from funad.data.preprocessing import normalised_array


@dataclass
class OnnxResult:
    scores: np.ndarray  # float32 [B]
    maps: np.ndarray  # float32 [B, S, S] at the model's input size
    labels: np.ndarray  # bool [B]: score above the model's threshold


class OnnxModel:
    """An exported model and the preprocessing and threshold recorded in its metadata."""

    def __init__(self, path: str | Path):
        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        metadata = self.session.get_modelmeta().custom_metadata_map
        self.threshold = float(metadata["threshold"])
        self.image_size = int(metadata["image_size"])
        self.mean = json.loads(metadata["mean"])
        self.std = json.loads(metadata["std"])
        self.input_name = self.session.get_inputs()[0].name

    def run(self, images: Sequence[Image.Image]) -> OnnxResult:
        """Score a batch of 8-bit RGB images (as :func:`funad.data.images.load_image` returns them)."""
        batch = np.stack([normalised_array(image, self.image_size, self.mean, self.std) for image in images])
        scores, maps, labels = self.session.run(["score", "anomaly_map", "label"], {self.input_name: batch})
        return OnnxResult(scores, maps, labels.astype(bool))


def resize_bilinear(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """float32 ``[height, width]`` from ``[h, w]``, as torch's ``interpolate(mode="bilinear", align_corners=False)``."""
    rows = _interpolation_matrix(array.shape[0], height)
    columns = _interpolation_matrix(array.shape[1], width)
    return (rows @ array.astype(np.float32) @ columns.T).astype(np.float32)


def _interpolation_matrix(size: int, new_size: int) -> np.ndarray:
    """``[new_size, size]`` weights: each output sample's two nearest inputs, at half-pixel centres, edges clamped."""
    source = np.maximum((np.arange(new_size) + 0.5) * (size / new_size) - 0.5, 0.0)
    lower = np.minimum(np.floor(source).astype(np.int64), size - 1)
    upper = np.minimum(lower + 1, size - 1)
    fraction = (source - lower).astype(np.float32)
    weights = np.zeros((new_size, size), dtype=np.float32)
    outputs = np.arange(new_size)
    np.add.at(weights, (outputs, lower), 1 - fraction)
    np.add.at(weights, (outputs, upper), fraction)
    return weights
