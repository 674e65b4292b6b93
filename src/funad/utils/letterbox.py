"""Where an image lies on the square backbone input: preprocessing draws it there and maps are cut back from it.

Plain arithmetic, so that preprocessing (PIL, no torch), the maps (torch) and the ONNX runtime
(neither) share one rule.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

#: ``aspect="auto"`` keeps the aspect when the training images' width / height ratios (5th to 95th
#: percentile) are more than this factor apart: one shared shape is stretched alike in every image
#: and keeps all of the input's rows, while shapes that differ would be distorted differently.
ASPECT_SPREAD = 1.1


def content_box(width: int, height: int, size: int, keep_aspect: bool) -> tuple[int, int, int, int]:
    """Where an image of ``width`` x ``height`` lies on the square input of side ``size``: (top, rows, left, columns).

    ``keep_aspect``: scaled so that its longer side fills the square and centred (letterboxed);
    otherwise stretched over the whole square.
    """
    if not keep_aspect:
        return 0, size, 0, size
    scale = size / max(width, height)
    rows, columns = max(1, round(height * scale)), max(1, round(width * scale))
    return (size - rows) // 2, rows, (size - columns) // 2, columns


def shapes_differ(sizes: Iterable[tuple[int, int]]) -> bool:
    """Whether images of these (width, height) differ in shape (:data:`ASPECT_SPREAD`): ``aspect="auto"`` then keeps
    their aspect."""
    ratios = [width / height for width, height in sizes]
    if not ratios:
        return False
    low, high = np.percentile(ratios, [5, 95])
    return bool(high / low > ASPECT_SPREAD)


#: The most :func:`kept_aspect_side` enlarges the backbone's own input: a bound on cost (4 x the patches), not a
#: measured optimum.
MAX_KEPT_ASPECT_SCALE = 2


def kept_aspect_side(sizes: Iterable[tuple[int, int]], own_side: int, patch: int) -> int:
    """The square input side for letterboxed images of these (width, height): ``own_side`` enlarged so that the median
    image's shorter side keeps ``own_side`` pixels, as a square photo's does (letterboxing shrinks it by the image's
    longer / shorter side ratio), rounded up to a multiple of ``patch``, at most :data:`MAX_KEPT_ASPECT_SCALE` times
    ``own_side``. Square images (ratio 1) keep ``own_side``."""
    ratios = [max(width, height) / min(width, height) for width, height in sizes]
    if not ratios:
        return own_side
    wanted = min(own_side * float(np.median(ratios)), MAX_KEPT_ASPECT_SCALE * own_side)
    return max(own_side, math.ceil(round(wanted / patch, 6)) * patch)


def cells_shown(box: tuple[int, int, int, int], grid: tuple[int, int], size: int) -> np.ndarray:
    """bool ``[rows x columns]`` (row-major): the patches of ``grid`` whose centre lies in ``box`` (:func:`content_box`)
    on the input of side ``size``, i.e. those a letterboxed image's map shows."""
    top, rows, left, columns = box
    centre_rows = (np.arange(grid[0]) + 0.5) * size / grid[0]
    centre_columns = (np.arange(grid[1]) + 0.5) * size / grid[1]
    inside_rows = (centre_rows >= top) & (centre_rows < top + rows)
    inside_columns = (centre_columns >= left) & (centre_columns < left + columns)
    return (inside_rows[:, None] & inside_columns[None, :]).reshape(-1)
