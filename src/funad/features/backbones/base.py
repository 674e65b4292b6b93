"""The backbone interface: a frozen network mapping images to a grid of patch features plus a global vector.

Every backbone maps a normalised image batch ``[B, 3, S, S]`` to a
:class:`~funad.features.containers.FeatureBatch` (``patches`` ``[B, K, D]`` laid out row-major
on a ``grid`` of ``h x w`` cells, and ``global_`` ``[B, G]``). Implementations register a factory
with :func:`register_backbone`; :mod:`funad.features.backbones.registry` builds them by name.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from funad.data.preprocessing import Preprocessing
from funad.utils.registry import Registry

logger = logging.getLogger(__name__)


class Backbone(nn.Module):
    """Base class: subclasses set the attributes below and implement
    ``forward(images [B, 3, S, S]) -> FeatureBatch``."""

    name: str
    preprocessing: Preprocessing
    grid: tuple[int, int]
    patch_dim: int
    global_dim: int
    #: Memory layout of the inputs (and weights) the network runs fastest in.
    memory_format: torch.memory_format = torch.contiguous_format
    #: Numeric precision of the forward pass (:meth:`set_precision`).
    precision: str = "fp32"

    @property
    def num_patches(self) -> int:
        """Patch features per image: the cells of ``grid``."""
        return self.grid[0] * self.grid[1]

    def set_precision(self, precision: str) -> None:
        """Run in ``precision`` ("fp32" or "int8"); subclasses that can, override this."""
        if precision == self.precision:
            return
        raise ValueError(f"precision {precision!r} is not implemented for backbone {self.name!r} (it runs in "
                         f"{self.precision}); int8 is, for the ONNX backbone imgfocus_dinov2_vits14")

    def describe(self) -> dict:
        """What a saved model records to rebuild this backbone and check a feature cache."""
        description = {
            "name": self.name,
            "preprocessing": self.preprocessing.to_dict(),
            "grid": list(self.grid),
            "patch_dim": self.patch_dim,
            "global_dim": self.global_dim,
        }
        # Only when not fp32, so that saved models and feature caches from before the setting keep their keys.
        if self.precision != "fp32":
            description["precision"] = self.precision
        return description


class BackboneFactory(Protocol):
    def __call__(self, *, weights: str | Path | None, pretrained: bool, image_size: int | None) -> Backbone: ...


BACKBONES: Registry[BackboneFactory] = Registry("backbone")
register_backbone = BACKBONES.register


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


HUB_HOST = "huggingface.co"
_OFFLINE_HINT = "Pass a local weights file with --weights PATH (Python: weights=PATH)."


@functools.cache
def hub_unreachable_reason() -> str | None:
    """Why timm's weights hub cannot be reached, checked once per process; None when it can.

    Without this, a machine with no network spends about a minute in the hub client's retries
    before failing. Skipped (None) where HF_HUB_OFFLINE is set (the hub client then reads its
    local cache and fails at once) or a proxy is configured (the hub is reached through it).
    """
    if any(os.environ.get(name) for name in ("HF_HUB_OFFLINE", "HTTPS_PROXY", "https_proxy")):
        return None
    try:
        socket.create_connection((HUB_HOST, 443), timeout=3).close()
    except OSError as error:
        return f"{HUB_HOST} is unreachable ({error})"
    return None


def import_timm(backbone: str) -> Any:
    """timm, which only the hub backbones and efficientnet_lite0 need: the hub extra, not a core dependency.

    A RuntimeError, so that the command line says it in one line.
    """
    try:
        import timm
    except ImportError as error:
        raise RuntimeError(f"the backbone {backbone!r} needs timm, which the default backbone does not: "
                           f"pip install 'funad[hub]' ({error})") from error
    return timm


def timm_model(model_name: str, weights: str | Path | None, pretrained: bool, **kwargs: Any) -> nn.Module:
    """A timm model with a local weights file, hub weights (``pretrained``) or random weights."""
    timm = import_timm(model_name)

    use_hub = pretrained and weights is None
    if use_hub and (reason := hub_unreachable_reason()):
        raise RuntimeError(f"cannot download pretrained weights for timm model {model_name!r}: {reason}. "
                           f"{_OFFLINE_HINT} With the weights already in the Hugging Face cache, set HF_HUB_OFFLINE=1.")
    try:
        model = timm.create_model(model_name, pretrained=use_hub, **kwargs)
    except Exception as error:  # the hub is unreachable on many factory machines
        if not use_hub:
            raise
        raise RuntimeError(
            f"could not download pretrained weights for timm model {model_name!r} ({error}). Offline? {_OFFLINE_HINT}"
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


# timm models are typed as plain modules: their stages are reached by attribute, hence Any.
StageFunction = Callable[[Any, torch.Tensor], tuple[list[torch.Tensor], torch.Tensor]]
