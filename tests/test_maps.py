"""Anomaly maps: the per-axis matrices equal upsampling, blurring and resizing done step by step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from funad.inference.maps import gaussian_kernel, patch_scores_to_maps
from funad.inference.scoring import ScoredImages


def step_by_step(scores: torch.Tensor, grid: tuple[int, int], input_size: int, sigma: float,
                 size: tuple[int, int]) -> torch.Tensor:
    """The three steps as 2-D torch operations: bilinear to S, separable reflect-padded Gaussian, bilinear to size."""
    maps = F.interpolate(scores.view(-1, 1, *grid), size=(input_size, input_size), mode="bilinear",
                         align_corners=False)
    if sigma > 0:
        kernel = gaussian_kernel(sigma)
        radius = len(kernel) // 2
        maps = F.conv2d(F.pad(maps, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
        maps = F.conv2d(F.pad(maps, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1))
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)[:, 0]


@pytest.mark.parametrize(("grid", "input_size", "sigma", "size"), [
    ((16, 16), 224, 4.0, (224, 224)),  # the default, at the input size
    ((16, 16), 224, 4.0, (256, 256)),  # bottle's own size
    ((8, 8), 112, 4.0, (75, 130)),  # smaller than the input, not square
    ((4, 6), 56, 0.0, (31, 300)),  # no blur, a grid that is not square
])
def test_matrices_equal_the_steps_one_after_the_other(grid, input_size, sigma, size):
    scores = torch.rand(3, grid[0] * grid[1], generator=torch.Generator().manual_seed(0)) * 5
    expected = step_by_step(scores, grid, input_size, sigma, size)
    maps = patch_scores_to_maps(scores, grid, input_size, sigma, size)
    assert maps.shape == (3, *size)
    torch.testing.assert_close(maps, expected, rtol=1e-5, atol=1e-5)


def test_scored_images_draw_each_map_at_the_asked_size():
    scores = torch.rand(2, 64, generator=torch.Generator().manual_seed(1))
    scored = ScoredImages(scores.amax(dim=1), scores, (8, 8), 112, 4.0)
    anomaly_map = scored.anomaly_map(1, 90, 70)
    assert anomaly_map.dtype == np.float32 and anomaly_map.shape == (90, 70)
    np.testing.assert_allclose(anomaly_map, step_by_step(scores[1:], (8, 8), 112, 4.0, (90, 70))[0].numpy(),
                               rtol=1e-5, atol=1e-5)
    image_level = ScoredImages(torch.tensor([0.25]), torch.tensor([[0.25]]), (1, 1), 112, 4.0)
    assert np.array_equal(image_level.anomaly_map(0, 5, 3), np.full((5, 3), 0.25, np.float32))
