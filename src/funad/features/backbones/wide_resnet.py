"""WideResNet-50-2 layers 2 and 3: PatchCore's backbone (timm, hub or local weights)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from funad.features.backbones.base import Backbone, Preprocessing, register_backbone, timm_model
from funad.features.backbones.cnn import CNNBackbone


def _resnet_stages(model: Any, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    x = model.maxpool(model.act1(model.bn1(model.conv1(images))))
    x = model.layer1(x)
    layer2 = model.layer2(x)
    layer3 = model.layer3(layer2)
    layer4 = model.layer4(layer3)
    return [layer2, layer3], layer4.mean(dim=(2, 3))


@register_backbone("wide_resnet50_2")
def wide_resnet50_2(*, weights: str | Path | None = None, pretrained: bool = True,
                    image_size: int | None = None) -> Backbone:
    """PatchCore's backbone: WideResNet-50-2 layers 2 and 3 (1536-d at stride 8)."""
    model = timm_model("wide_resnet50_2", weights, pretrained)
    preprocessing = Preprocessing(image_size or 224)
    return CNNBackbone("wide_resnet50_2", model, _resnet_stages, [512, 1024], 8, 2048, preprocessing)
