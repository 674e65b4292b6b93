"""Anomaly maps drawn as colour overlays on their images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image

from funad.data.images import load_image
from funad.utils.files import write_atomically


def colourise(anomaly_map: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    """float map -> uint8 RGB with the 'jet' colour map on a fixed range (comparable across images)."""
    low, high = value_range
    scaled = np.clip((anomaly_map - low) / max(high - low, 1e-12), 0.0, 1.0)
    return (colormaps["jet"](scaled)[..., :3] * 255).astype(np.uint8)


def overlay(image: np.ndarray, anomaly_map: np.ndarray, value_range: tuple[float, float],
            alpha: float = 0.5) -> np.ndarray:
    colours = colourise(anomaly_map, value_range).astype(np.float32)
    return ((1 - alpha) * image.astype(np.float32) + alpha * colours).astype(np.uint8)


def save_overlay(image_path: Path, anomaly_map: np.ndarray, out_path: Path,
                 value_range: tuple[float, float] = (0.0, 1.0)) -> Path:
    image = np.asarray(load_image(image_path))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.fromarray(overlay(image, anomaly_map, value_range))
    write_atomically(out_path, lambda handle: picture.save(handle, format="PNG"))
    return out_path
