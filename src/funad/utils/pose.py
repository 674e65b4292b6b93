"""An elongated object's pose in a photo, and the photo turned to a canonical pose (numpy and Pillow only).

A part photographed at any angle on a plain background (a screw on a table) shows its normal
patterns in every orientation; a patch bank then needs many images to cover each pattern in
each pose, and funad's floors take the rare poses for defects. Turning every photo so that the
object lies along the horizontal axis, its heavier end on the left and its centre at the
photo's centre, lets the bank compare like with like (docs/accuracy.md, "Object alignment").

The object is what differs from the background, the median colour of the photo's border:
pixels farther from it than Otsu's threshold of those distances. Its centre and axis are the
mask's mean and principal direction; of the axis' two directions, the one away from the end
with more of the object's pixels. Extraction and the torch-free ONNX runtime share this module,
and maps drawn on a turned photo are turned back (:func:`map_to_photo`) before anyone sees them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from funad.utils.resize import resize_bilinear

#: Poses are read from a copy of the photo whose longer side is at most this (pixels): enough for
#: an axis, and the cost no longer grows with the photo.
POSE_THUMBNAIL = 256
#: Identifies how poses are estimated: features turned by another version are extracted again (the feature
#: cache's key), so raise it whenever :func:`estimate_pose` changes what it returns.
POSE_VERSION = 1
#: ``align="auto"`` reads the poses of at most this many training photos, evenly spread over them.
POSE_SAMPLE = 64
#: Share of the object's length, at each end, whose pixels decide which end is heavier.
END_SHARE = 0.15
#: ``align="auto"`` turns photos only when, in the median training photo, the object is this many times
#: longer than wide (variance along its axis over across it)...
MIN_ELONGATION = 4.0
#: ... and at most this share of the border's pixels belong to it (a texture fills the border).
MAX_BORDER_OBJECT_SHARE = 0.02


@dataclass(frozen=True)
class ObjectPose:
    """Where the object lies in a photo: ``centre`` (x, y) in the photo's pixels and ``angle``, degrees
    clockwise on screen from the horizontal axis to the direction from the object's heavier end to its
    lighter end. ``elongation``: variance along the axis over variance across it; ``border_share``: the
    share of the photo's border pixels that the object covers."""

    centre: tuple[float, float]
    angle: float
    elongation: float
    border_share: float


def otsu_threshold(values: np.ndarray) -> float:
    """The threshold that best separates ``values`` into two classes (Otsu's between-class variance); equal values
    are one class (none lies above)."""
    if values.min() == values.max():
        return float(values.max())
    counts, edges = np.histogram(values, bins=256)
    centres = (edges[:-1] + edges[1:]) / 2
    below = np.cumsum(counts)
    above = below[-1] - below
    sums = np.cumsum(counts * centres)
    mean_below = sums / np.maximum(below, 1)
    mean_above = (sums[-1] - sums) / np.maximum(above, 1)
    return float(centres[np.argmax(below * above * (mean_below - mean_above) ** 2)])


def border_colour(array: np.ndarray) -> np.ndarray:
    """The median colour of an ``[H, W, C]`` photo's outermost rows and columns."""
    border = np.concatenate([array[0], array[-1], array[:, 0], array[:, -1]])
    return np.median(border, axis=0)


def object_mask(array: np.ndarray) -> np.ndarray:
    """bool ``[H, W]``: the pixels of an ``[H, W, C]`` photo whose colour stands out from its border's."""
    distances = np.linalg.norm(array.astype(np.float64) - border_colour(array), axis=-1)
    return distances > otsu_threshold(distances.ravel())


def estimate_pose(image: Image.Image) -> ObjectPose | None:
    """The object's pose in ``image``; None when nothing stands out from the background."""
    scale = min(1.0, POSE_THUMBNAIL / max(image.size))
    thumbnail = image.convert("RGB")
    if scale < 1.0:
        thumbnail = thumbnail.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                                     Image.Resampling.BILINEAR)
    mask = object_mask(np.asarray(thumbnail))
    rows, columns = np.nonzero(mask)
    if len(rows) < 3:
        return None
    points = np.stack([columns, rows]).astype(np.float64)
    centre = points.mean(axis=1)
    variances, directions = np.linalg.eigh(np.cov(points - centre[:, None]))
    axis = directions[:, 1]
    along = axis @ (points - centre[:, None])
    low, high = along.min(), along.max()
    end = END_SHARE * (high - low)
    if np.count_nonzero(along >= high - end) > np.count_nonzero(along <= low + end):
        axis = -axis  # the heavier end first
    border = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
    # Pixel centres of the thumbnail, back in the photo's coordinates.
    centre_x, centre_y = ((centre + 0.5) / scale - 0.5).tolist()
    return ObjectPose((centre_x, centre_y), float(np.degrees(np.arctan2(axis[1], axis[0]))),
                      float(variances[1] / max(variances[0], 1e-12)), float(border.mean()))


def aligned_photo(image: Image.Image, pose: ObjectPose | None) -> Image.Image:
    """``image`` turned about the object's centre so that its axis runs left to right (heavier end left), the
    centre moved to the photo's centre; same size, the uncovered corners in the border's colour."""
    if pose is None:
        return image
    fill = tuple(int(round(float(value))) for value in border_colour(np.asarray(image)).reshape(-1))
    # Pillow turns counter-clockwise on screen; the axis lies clockwise by ``angle``.
    return _turned(image, pose.angle, pose.centre, (image.width / 2, image.height / 2),
                   fill[0] if len(fill) == 1 else fill)


def _turned(image: Image.Image, degrees: float, centre: tuple[float, float], moved_to: tuple[float, float],
            fill: float | tuple[int, ...]) -> Image.Image:
    """``image`` turned counter-clockwise (on screen) by ``degrees`` about ``centre``, which moves to ``moved_to``."""
    return image.rotate(degrees, resample=Image.Resampling.BILINEAR, center=centre,
                        # Sub-pixel translations work; Pillow's stubs ask for ints.
                        translate=(moved_to[0] - centre[0], moved_to[1] - centre[1]),  # type: ignore[arg-type]
                        fillcolor=fill)


def map_to_photo(anomaly_map: np.ndarray, pose: ObjectPose | None, photo_size: tuple[int, int]) -> np.ndarray:
    """float32 ``[h, w]``: a map drawn on the aligned photo turned back onto the photo (of ``photo_size``,
    (width, height)); the photo's parts that the aligned photo left out take the map's lowest value."""
    if pose is None:
        return anomaly_map
    height, width = anomaly_map.shape
    drawn = anomaly_map.astype(np.float32)
    if abs(width * photo_size[1] - height * photo_size[0]) > max(photo_size):  # not the photo's shape (not rounding)
        drawn = resize_bilinear(drawn, photo_size[1], photo_size[0])  # turned in the photo's proportions
    scale = drawn.shape[1] / photo_size[0]
    turned = np.asarray(_turned(Image.fromarray(drawn), -pose.angle, (drawn.shape[1] / 2, drawn.shape[0] / 2),
                                (pose.centre[0] * scale, pose.centre[1] * scale), float(anomaly_map.min())),
                        dtype=np.float32)
    return turned if turned.shape == (height, width) else resize_bilinear(turned, height, width)


def objects_elongated(poses: Iterable[ObjectPose | None]) -> bool:
    """``align="auto"``'s rule, from the training photos' poses alone: the median photo shows one elongated
    object clear of the border (:data:`MIN_ELONGATION`, :data:`MAX_BORDER_OBJECT_SHARE`)."""
    found = [pose for pose in poses if pose is not None]
    if not found:
        return False
    return bool(np.median([pose.elongation for pose in found]) >= MIN_ELONGATION
                and np.median([pose.border_share for pose in found]) <= MAX_BORDER_OBJECT_SHARE)
