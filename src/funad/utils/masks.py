"""Ground-truth masks: any image file whose non-zero pixels mark the defect."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

#: MVTec AD's folder of normal images, under ``train/`` and ``test/``.
MVTEC_NORMAL_FOLDER = "good"
#: Regions are 8-connected components (diagonal neighbours join), as in the MVTec AD evaluation code.
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def read_mask(path: str | Path) -> np.ndarray:
    """Boolean ``[height, width]``: True where the mask is non-zero.

    Converted to greyscale first, so an RGB or palette mask counts the same pixels as a grey one.
    """
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("L")) > 0
    except OSError as error:
        raise ValueError(f"{path}: cannot read the ground-truth mask ({error})") from error


def mvtec_mask_path(ground_truth: Path, defect_type: str, image: Path) -> Path:
    """Where MVTec AD keeps the mask of the test image ``test/<defect_type>/<name>``: in ``ground_truth``."""
    return ground_truth / defect_type / f"{image.stem}_mask.png"
