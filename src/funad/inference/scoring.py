"""From patch scores to image scores and anomaly maps: the one path predict, audit and the benchmark share."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from funad.inference.maps import patch_scores_to_maps
from funad.inference.scorers.base import PatchScorer
from funad.utils.letterbox import content_box
from funad.utils.pose import ObjectPose, map_to_photo


@dataclass
class ScoredImages:
    scores: torch.Tensor  # [B] image scores (higher = more anomalous), on the CPU
    patch_scores: torch.Tensor  # [B, K] float32 patch scores on the CPU, K = grid rows x columns (1: image level)
    grid: tuple[int, int]
    input_size: int  # the backbone's input size S, at which maps are smoothed
    sigma: float
    keep_aspect: bool = False  # the images were letterboxed into the input (Preprocessing.keep_aspect)

    def anomaly_map(self, row: int, height: int, width: int, image_shape: tuple[int, int] | None = None,
                    pose: ObjectPose | None = None) -> np.ndarray:
        """float32 ``[height, width]``: image ``row``'s map, covering the image (of ``image_shape``, (height,
        width) of the image; the map's own if None: a letterboxed image's margins are cut off by its shape);
        ``pose``: the image was turned from it (:mod:`funad.utils.pose`), and its map is turned back."""
        if self.patch_scores.shape[1] == 1:  # one feature per image (the "image" level): that image's score
            return np.full((height, width), float(self.patch_scores[row, 0]), dtype=np.float32)
        image_height, image_width = image_shape or (height, width)
        content = content_box(image_width, image_height, self.input_size, self.keep_aspect)
        anomaly_map = patch_scores_to_maps(self.patch_scores[row], self.grid, self.input_size, self.sigma,
                                           (height, width), content)[0]
        return map_to_photo(anomaly_map.numpy(), pose, (image_width, image_height))


@torch.no_grad()
def score_images(scorer: PatchScorer, patches: torch.Tensor, grid: tuple[int, int], input_size: int,
                 sigma: float, keep_aspect: bool = False) -> ScoredImages:
    """Score ``[B, K, D]`` method features with ``scorer``; their maps are drawn on the ``grid`` of patches
    (``keep_aspect``: of letterboxed images)."""
    patch_scores, image_scores = scorer.score(patches)
    image_scores = image_scores.cpu()
    # Maps are float32 whatever the scorer's precision; image scores keep it (ties stay apart).
    return ScoredImages(image_scores, patch_scores.float().cpu(), grid, input_size, sigma, keep_aspect)
