"""Saved models: tensors in safetensors, everything else in JSON. No pickle anywhere.

A model directory holds ``model.safetensors`` and ``model.json``; the JSON records the format
version, what rebuilds the estimator (configuration, backbone and its preprocessing), the
fitted state's JSON part (:mod:`funad.fitted_state`), package versions and the SHA-256 of the
tensor file, which loading checks before use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save

from funad.fitted_state import FittedState
from funad.utils.files import (
    file_digest,
    read_versioned_json,
    write_atomically,
    write_directory_atomically,
    write_text_atomically,
)
from funad.utils.versions import package_versions

# 3: absolute training paths with their content hashes, and the pixel threshold of defect regions.
# 2: the fitted state as one block, with every scorer's own tensors (1: Local-Net plus a "knn" bank).
FORMAT_VERSION = 3
TENSORS = "model.safetensors"
MANIFEST = "model.json"


class ModelFormatError(ValueError):
    """A model directory that is missing, tampered with, or from an incompatible version."""


@dataclass
class SavedModel:
    estimator: dict[str, Any]  # what rebuilds the estimator: configuration, backbone, weights id
    state: FittedState


def save_model(directory: Path, state: FittedState, estimator: dict[str, Any]) -> Path:
    """Write to a temporary sibling folder, then rename it into place (never a half-written model)."""
    tensors, info = state.to_saved()

    def write(staging: Path) -> None:
        write_atomically(staging / TENSORS, lambda handle: handle.write(save(tensors)))
        manifest = {
            "format_version": FORMAT_VERSION,
            "estimator": estimator,
            "fitted": info,
            "tensors_sha256": file_digest(staging / TENSORS),
            "tensor_shapes": {name: list(value.shape) for name, value in tensors.items()},
            "versions": package_versions(),
        }
        write_text_atomically(staging / MANIFEST, json.dumps(manifest, indent=2))

    return write_directory_atomically(directory, write)


def model_digest(directory: Path) -> str:
    """What identifies a saved model: the sha256 of its manifest, which holds its tensors' sha256."""
    return file_digest(directory / MANIFEST)


def check_model_directory(directory: Path) -> None:
    """Raise unless ``directory`` holds a saved model's files (their contents are checked on loading)."""
    if not directory.exists():
        raise FileNotFoundError(f"no such model directory: {directory}")
    if not (directory / MANIFEST).is_file() or not (directory / TENSORS).is_file():
        raise ModelFormatError(f"{directory} is not a funad model directory (needs {MANIFEST} and {TENSORS})")


#: What every manifest holds, and the estimator part's own keys (a manifest edited by hand may lack any).
_MANIFEST_PARTS = {"estimator": dict, "fitted": dict, "tensors_sha256": str, "tensor_shapes": dict}
_ESTIMATOR_KEYS = ("config", "pretrained", "backbone")


def _read_manifest(directory: Path) -> dict[str, Any]:
    check_model_directory(directory)
    manifest = read_versioned_json(directory / MANIFEST, FORMAT_VERSION, ModelFormatError, kind="model",
                                   advice="fit the model again with this funad")
    for key, kind in _MANIFEST_PARTS.items():
        if not isinstance(manifest.get(key), kind):
            raise ModelFormatError(f"{directory / MANIFEST}: no {key!r} ({kind.__name__}) in the manifest: edited "
                                   "or cut; fit the model again")
    missing = [key for key in _ESTIMATOR_KEYS if key not in manifest["estimator"]]
    if missing:
        raise ModelFormatError(f"{directory / MANIFEST}: the estimator part lacks {', '.join(missing)}: edited or "
                               "cut; fit the model again")
    return manifest


def load_model(directory: Path) -> SavedModel:
    """Read and check a model directory written by :func:`save_model`."""
    manifest = _read_manifest(directory)
    tensor_path = directory / TENSORS
    if file_digest(tensor_path) != manifest["tensors_sha256"]:
        raise ModelFormatError(f"{tensor_path}: checksum mismatch (file altered or corrupt)")
    try:
        tensors = load_file(str(tensor_path))
    except SafetensorError as error:
        raise ModelFormatError(f"{tensor_path}: unreadable tensors ({error})") from error
    expected = manifest["tensor_shapes"]
    actual = {name: list(value.shape) for name, value in tensors.items()}
    if actual != expected:
        raise ModelFormatError(f"{tensor_path}: tensors {actual} do not match the manifest {expected}")
    try:
        state = FittedState.from_saved(tensors, manifest["fitted"])
    except (KeyError, TypeError, ValueError) as error:
        raise ModelFormatError(f"{directory / MANIFEST}: the fitted state does not fit its tensors "
                               f"({type(error).__name__}: {error})") from error
    return SavedModel(manifest["estimator"], state)
