"""Finding and reading images: every input is checked before any feature is extracted."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


class ImageLoadError(ValueError):
    """An input file that cannot be used as an image; the message names the file and the problem."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


def discover_images(inputs: str | Path | Iterable[str | Path]) -> list[Path]:
    """Image files among ``inputs`` (files and folders, folders searched recursively), in a stable order."""
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS))
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
    return found


def load_image(path: str | Path) -> Image.Image:
    """Read ``path`` as an 8-bit RGB image, applying its EXIF orientation."""
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            return image.convert("RGB")
    except Exception as error:
        raise ImageLoadError(path, f"not a readable image ({error})") from error


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) after EXIF orientation."""
    with Image.open(path) as image:
        width, height = ImageOps.exif_transpose(image).size
    return height, width


def to_array(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.uint8)
