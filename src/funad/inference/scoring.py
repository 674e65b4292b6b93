"""From patch scores to image scores and anomaly maps: the one path predict, audit and the benchmark share."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from funad.inference.maps import patch_scores_to_maps, resize_map
from funad.inference.scorers.base import PatchScorer


@dataclass
class ScoredImages:
    scores: torch.Tensor  # [B] image scores (higher = more anomalous), on the CPU
    maps: torch.Tensor  # [B, S, S] float32 anomaly maps at the backbone's input size S

    def anomaly_map(self, row: int, height: int, width: int) -> np.ndarray:
        """float32 ``[height, width]``: image ``row``'s map at the image's own size."""
        # copy=False: a 24-megapixel map is 96 MB, already float32 (the maps are)
        return resize_map(self.maps[row], height, width).cpu().numpy().astype(np.float32, copy=False)


@torch.no_grad()
def score_images(scorer: PatchScorer, patches: torch.Tensor, grid: tuple[int, int], input_size: int,
                 sigma: float) -> ScoredImages:
    """Score ``[B, K, D]`` method features with ``scorer`` and map them onto the ``grid`` of patches.

    One feature per image (K = 1, the "image" level) gives a constant map: that image's score.
    """
    patch_scores = scorer.score_patches(patches)
    image_scores = scorer.image_scores(patches, patch_scores).cpu()
    # Maps are float32 whatever the scorer's precision; image scores keep it (ties stay apart).
    patch_scores = patch_scores.float()
    if patch_scores.shape[1] == 1:
        maps = patch_scores.view(-1, 1, 1).expand(-1, input_size, input_size)
    else:
        maps = patch_scores_to_maps(patch_scores, grid, input_size, sigma)
    return ScoredImages(image_scores, maps)
