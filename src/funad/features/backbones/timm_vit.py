"""timm ViTs (the paper's DINO ViT-B/8, DINOv2): last block after the final LayerNorm."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from funad.features.backbones.base import Backbone, Preprocessing, register_backbone, timm_model
from funad.features.containers import FeatureBatch


class ViTBackbone(Backbone):
    """A timm ViT's last block after the final LayerNorm: patch tokens, optionally with CLS prepended.

    The paper's patch feature is concat(CLS, patch_k); ``concat_cls=False`` keeps the patch token only.
    """

    model: Any  # a timm VisionTransformer

    def __init__(self, name: str, model: Any, image_size: int, preprocessing: Preprocessing, concat_cls: bool):
        super().__init__()
        self.name = name
        self.model = model
        self.concat_cls = concat_cls
        self.preprocessing = preprocessing
        patch = model.patch_embed.patch_size[0]
        self.grid = (image_size // patch, image_size // patch)
        width = model.embed_dim
        self.patch_dim = 2 * width if concat_cls else width
        self.global_dim = width

    def forward(self, images: torch.Tensor) -> FeatureBatch:
        tokens = self.model.forward_features(images)
        cls = tokens[:, 0]
        patch_tokens = tokens[:, self.model.num_prefix_tokens:]
        if self.concat_cls:
            patch_tokens = torch.cat([cls[:, None].expand_as(patch_tokens), patch_tokens], dim=-1)
        return FeatureBatch(patches=patch_tokens, global_=cls)


def _register_vit(name: str, timm_name: str, default_size: int = 224) -> None:
    def factory(*, weights: str | Path | None = None, pretrained: bool = True,
                image_size: int | None = None) -> Backbone:
        size = image_size or default_size
        model = timm_model(timm_name, weights, pretrained, img_size=size, num_classes=0)
        return ViTBackbone(name, model, size, Preprocessing(size), concat_cls=True)

    register_backbone(name)(factory)


# The paper's backbone: self-supervised DINO ViT-B/8, CLS (+) patch -> 1536-d on 28x28 at 224.
_register_vit("dino_vitb8", "vit_base_patch8_224.dino")
# DINOv2 ViT-S/14 and ViT-B/14 at 224 -> 16x16 grid.
_register_vit("dinov2_vits14", "vit_small_patch14_dinov2.lvd142m")
_register_vit("dinov2_vitb14", "vit_base_patch14_dinov2.lvd142m")
