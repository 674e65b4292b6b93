"""An RGB image as a backbone input, in numpy only: extraction (torch) and the ONNX runtime (no torch) share it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from funad.utils.letterbox import content_box
from funad.utils.pose import ObjectPose, aligned_photo


def normalised_array(image: Image.Image, size: int, mean: Sequence[float], std: Sequence[float],
                     keep_aspect: bool = False, pose: ObjectPose | None = None) -> np.ndarray:
    """float32 ``[3, size, size]``: the whole image resized (bilinear) to a square, scaled to 0..1, normalised.

    ``pose``: the image first turned to that pose's canonical one (:func:`funad.utils.pose.aligned_photo`).

    ``keep_aspect``: resized without distortion into the square (:func:`funad.utils.letterbox.content_box`), the margins
    the image's own mean colour (margins of the normalisation's mean colour cost magnetic tile's grey photos 0.8
    points of image AUROC on seed 0: README, "Aspect ratio").
    """
    image = aligned_photo(image, pose)
    top, rows, left, columns = content_box(image.width, image.height, size, keep_aspect)
    resized = image.resize((columns, rows), Image.Resampling.BILINEAR)
    if (rows, columns) != (size, size):
        own_mean = np.asarray(resized, dtype=np.float32).reshape(-1, 3).mean(axis=0)
        canvas = Image.new("RGB", (size, size), tuple(int(round(float(value))) for value in own_mean))
        canvas.paste(resized, (left, top))
        resized = canvas
    array = np.asarray(resized, dtype=np.float32) / 255.0
    normalised = (array - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(normalised.transpose(2, 0, 1))


#: Poses of a preprocessed image (``[3, S, S]``) a scorer may ask for besides the image itself:
#: quarter turns and the left-right mirror. On the square input, turning after the resize equals
#: resizing the turned photo, so a view costs one more backbone pass and no second decode.
#: The eighth turns between them (45, 135, 225, 315 degrees) are interpolated (bilinear), the
#: corners that leave the square filled by reflection.
VIEWS = ("rot90", "rot180", "rot270", "mirror", "rot45", "rot135", "rot225", "rot315")


def view_of(array: np.ndarray, view: str) -> np.ndarray:
    """``array`` ``[C, S, S]`` in pose ``view`` (one of :data:`VIEWS`), C-contiguous."""
    if view == "mirror":
        return np.ascontiguousarray(array[:, :, ::-1])
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; expected one of {', '.join(VIEWS)}")
    degrees = int(view.removeprefix("rot"))
    if degrees % 90:
        from scipy import ndimage  # only for the eighth turns

        return np.ascontiguousarray(ndimage.rotate(array, degrees, axes=(2, 1), reshape=False, order=1,
                                                   mode="reflect"), dtype=np.float32)
    return np.ascontiguousarray(np.rot90(array, degrees // 90, axes=(1, 2)))
