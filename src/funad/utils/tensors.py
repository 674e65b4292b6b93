"""Named tensors of several parts in one safetensors file: each part's names under its own prefix."""

from __future__ import annotations

from collections.abc import Mapping

import torch


def with_prefix(prefix: str, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``tensors`` renamed ``prefix + name``, as contiguous CPU tensors (what safetensors writes)."""
    return {prefix + name: value.detach().cpu().contiguous() for name, value in tensors.items()}


def under_prefix(prefix: str, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors named ``prefix + name`` in ``tensors``, by ``name``: the part :func:`with_prefix` stored."""
    return {name.removeprefix(prefix): value for name, value in tensors.items() if name.startswith(prefix)}
