"""Backbones by name, as in timm::

    backbone = create_backbone("efficientnet_lite0")            # offline CNN
    backbone = create_backbone("dino_vitb8", weights="vit.pth")  # local weights file

Importing the implementation modules below registers them; a new family is one module here
plus one import line.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from funad.features.backbones import efficientnet, onnx_dinov2, timm_vit, wide_resnet  # noqa: F401 (registration)
from funad.features.backbones.base import BACKBONES, Backbone


def list_backbones() -> list[str]:
    return BACKBONES.names()


def create_backbone(
    name: str,
    *,
    weights: str | Path | None = None,
    pretrained: bool = True,
    image_size: int | None = None,
    precision: str = "fp32",
    keep_aspect: bool = False,
    align_object: bool = False,
) -> Backbone:
    """Build a frozen backbone in eval mode.

    ``weights``: a local state-dict file (safetensors, or a torch file read with
    ``weights_only=True``). ``pretrained=False`` gives random weights (tests, smoke runs).
    ``precision``: "fp32", or "int8" where the backbone implements it (:meth:`Backbone.set_precision`).
    ``keep_aspect``: images are letterboxed into the input (:class:`Preprocessing`), not stretched;
    ``align_object``: photos are turned to their object's canonical pose first.
    """
    backbone = BACKBONES[name](weights=weights, pretrained=pretrained, image_size=image_size)
    backbone.preprocessing = dataclasses.replace(backbone.preprocessing, keep_aspect=keep_aspect,
                                                 align_object=align_object)
    backbone.set_precision(precision)
    backbone.eval()
    for parameter in backbone.parameters():
        parameter.requires_grad_(False)
    return backbone
