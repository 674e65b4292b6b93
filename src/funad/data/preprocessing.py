"""An RGB image as a backbone input, in numpy only: extraction (torch) and the ONNX runtime (no torch) share it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from funad.utils.letterbox import content_box
from funad.utils.pose import POSE_VERSION, ObjectPose, aligned_photo, estimate_pose

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes a backbone input: the whole image resized to a square, then normalised.

    The whole image is resized (no centre crop) so that the anomaly map covers every pixel;
    ``keep_aspect``: without distortion, letterboxed (:func:`funad.utils.letterbox.content_box`).
    ``align_object``: the photo first turned to its object's canonical pose (:mod:`funad.utils.pose`).
    """

    image_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    keep_aspect: bool = False
    align_object: bool = False

    def to_dict(self) -> dict:
        described = {"image_size": self.image_size, "mean": list(self.mean), "std": list(self.std)}
        # Only when set, so that feature caches and saved models from before the settings keep their keys; turned
        # features are keyed by the version of the pose estimate that turned them.
        flags = {"keep_aspect": True} if self.keep_aspect else {}
        return described | flags | ({"align_object": POSE_VERSION} if self.align_object else {})


def backbone_input(image: Image.Image, preprocessing: Preprocessing) -> tuple[np.ndarray, ObjectPose | None]:
    """float32 ``[3, S, S]``: ``image`` as the backbone takes it, and the object pose it was turned from (None: not
    turned), by which its map is turned back (:func:`funad.utils.pose.map_to_photo`)."""
    pose = estimate_pose(image) if preprocessing.align_object else None
    return normalised_array(image, preprocessing.image_size, preprocessing.mean, preprocessing.std,
                            preprocessing.keep_aspect, pose), pose


def normalised_array(image: Image.Image, size: int, mean: Sequence[float], std: Sequence[float],
                     keep_aspect: bool = False, pose: ObjectPose | None = None) -> np.ndarray:
    """float32 ``[3, size, size]``: the whole image resized (bilinear) to a square, scaled to 0..1, normalised.

    ``pose``: the image first turned to that pose's canonical one (:func:`funad.utils.pose.aligned_photo`).

    ``keep_aspect``: resized without distortion into the square (:func:`funad.utils.letterbox.content_box`), the margins
    the image's own mean colour (margins of the normalisation's mean colour cost magnetic tile's grey photos 0.8
    points of image AUROC on seed 0: docs/accuracy.md, "Aspect ratio").
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
