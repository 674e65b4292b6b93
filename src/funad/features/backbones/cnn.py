"""CNN backbones: intermediate stages, locally averaged, upsampled to the finest stage and concatenated."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from funad.features.backbones.base import Backbone, Preprocessing, StageFunction, local_average
from funad.features.containers import FeatureBatch


class CNNBackbone(Backbone):
    # oneDNN and cuDNN run convolutions faster on channels-last tensors (EfficientNet-Lite0 on CPU:
    # about 1.25x, docs/speed.md).
    memory_format = torch.channels_last

    def __init__(self, name: str, model: nn.Module, stages: StageFunction, channels: list[int], stride: int,
                 global_dim: int, preprocessing: Preprocessing):
        super().__init__()
        self.name = name
        self.model = model
        self._stages = stages
        self.preprocessing = preprocessing
        side = preprocessing.image_size // stride
        self.grid = (side, side)
        self.patch_dim = sum(channels)
        self.global_dim = global_dim

    def forward(self, images: torch.Tensor) -> FeatureBatch:
        maps, global_ = self._stages(self.model, images)
        size = maps[0].shape[-2:]
        aligned = [local_average(maps[0])] + [
            F.interpolate(local_average(m), size=size, mode="bilinear", align_corners=False) for m in maps[1:]
        ]
        grid = torch.cat(aligned, dim=1)
        patches = grid.flatten(2).transpose(1, 2)
        return FeatureBatch(patches=patches, global_=global_)
