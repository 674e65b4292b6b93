"""From a grid of patch scores to a per-pixel anomaly map at the image's own size."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(4 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``[B, 1, H, W]`` maps with reflect padding."""
    if sigma <= 0:
        return maps
    kernel = gaussian_kernel(sigma).to(maps)
    radius = len(kernel) // 2
    maps = F.conv2d(F.pad(maps, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
    return F.conv2d(F.pad(maps, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1))


def patch_scores_to_maps(scores: torch.Tensor, grid: tuple[int, int], input_size: int, sigma: float) -> torch.Tensor:
    """``[B, K]`` patch scores -> ``[B, S, S]`` maps at the backbone input size S.

    Bilinear upsampling, then Gaussian smoothing with ``sigma`` pixels at that size (docs/method.md: 4 at 224).
    """
    grids = scores.view(-1, 1, *grid)
    maps = F.interpolate(grids, size=(input_size, input_size), mode="bilinear", align_corners=False)
    return gaussian_blur(maps, sigma)[:, 0]


def resize_map(anomaly_map: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[S, S]`` -> ``[height, width]``: the map of the image at its original size."""
    return F.interpolate(anomaly_map[None, None], size=(height, width), mode="bilinear", align_corners=False)[0, 0]
