"""From a grid of patch scores to a per-pixel anomaly map at the image's own size.

A map is the grid upsampled (bilinear) to the backbone's input size S, smoothed there with a
Gaussian of ``sigma`` pixels (reflect padding; docs/method.md: 4 at 224), then resized (bilinear)
to the image's size. All three steps are linear and act on rows and columns separately, so along
each axis they are one small matrix (:func:`axis_operator`) and a map is ``rows @ grid @ columns.T``:
0.05 ms wall for a 256 x 256 bottle map, where the convolution at S and the resizing took 3.35 ms
(docs/speed.md).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F

from funad.utils.resize import interpolation_matrix


def gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(4 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def _blurred(signals: torch.Tensor, sigma: float) -> torch.Tensor:
    """``[N, 1, L]`` signals smoothed along L by the Gaussian of ``sigma``, reflect-padded."""
    if sigma <= 0:
        return signals
    kernel = gaussian_kernel(sigma)
    radius = len(kernel) // 2
    return F.conv1d(F.pad(signals, (radius, radius), mode="reflect"), kernel.view(1, 1, -1))


@lru_cache(maxsize=64)
def axis_operator(cells: int, input_size: int, sigma: float, size: int, start: int = 0,
                  length: int | None = None) -> torch.Tensor:
    """float32 ``[size, cells]``: along one axis, ``cells`` patch scores -> ``size`` map pixels.

    ``start``, ``length``: the stretch of the input the image fills (a letterboxed image's,
    :func:`funad.utils.letterbox.content_box`), cut out after the smoothing; all of it if None.
    The bilinear steps are :func:`funad.utils.resize.interpolation_matrix`, the runtime's rule; the
    smoothing is run on each cell's column of the upsampling. Shared between calls: read it, never write into it.
    """
    length = input_size if length is None else length
    upsampled = torch.from_numpy(interpolation_matrix(cells, input_size).T)[:, None]  # [cells, 1, input_size]
    smoothed = _blurred(upsampled, sigma)[:, 0, start:start + length]
    return torch.from_numpy(interpolation_matrix(length, size)) @ smoothed.T


def patch_scores_to_maps(scores: torch.Tensor, grid: tuple[int, int], input_size: int, sigma: float,
                         size: tuple[int, int] | None = None,
                         content: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """``[B, K]`` patch scores on a ``grid`` (K = rows x columns) -> ``[B, height, width]`` maps.

    ``size``: (height, width) of the maps; the backbone's input size (S x S) if None.
    ``content``: (top, rows, left, columns) of the input the image fills (a letterboxed image);
    the whole input if None.
    """
    height, width = size or (input_size, input_size)
    top, content_rows, left, content_columns = content or (0, input_size, 0, input_size)
    rows = axis_operator(grid[0], input_size, float(sigma), height, top, content_rows).to(scores)
    columns = axis_operator(grid[1], input_size, float(sigma), width, left, content_columns).to(scores)
    return rows @ scores.reshape(-1, *grid) @ columns.T
