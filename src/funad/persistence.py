"""Saved models: tensors in safetensors, everything else in JSON. No pickle anywhere.

A model directory holds ``model.safetensors`` and ``model.json``; the JSON records the format
version, the configuration, the backbone and its preprocessing, package versions and the
SHA-256 of the tensor file, which loading checks before use.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from funad.config import FunADConfig
from funad.features.backbones import file_sha256
from funad.inference.knn import NearestNeighbourScorer
from funad.method.local_net import LocalNet
from funad.method.trainer import EpochRecord

FORMAT_VERSION = 1
TENSORS = "model.safetensors"
MANIFEST = "model.json"


class ModelFormatError(ValueError):
    """A model directory that is missing, tampered with, or from an incompatible version."""


def package_versions() -> dict[str, str]:
    """Versions recorded beside saved models and benchmark results."""
    import funad

    # funad's own version from the code that ran (it may run from a source tree, uninstalled).
    versions = {"funad": funad.__version__}
    for name in ("torch", "timm", "numpy", "faiss-cpu", "safetensors", "scikit-learn", "onnxruntime"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def save_model(model, directory: Path) -> Path:
    """Write to a temporary sibling folder, then rename it into place (never a half-written model)."""
    tensors = {f"local_net.{k}": v.detach().cpu().contiguous() for k, v in model.local_net_.state_dict().items()}
    tensors["train_scores"] = torch.as_tensor(np.asarray(model.train_scores_, dtype=np.float32))
    tensors["judged_normal"] = torch.as_tensor(np.asarray(model.judged_normal_, dtype=np.uint8))
    if model.config.scorer == "knn":
        tensors["knn_bank"] = model.knn_.bank_
        # with "knn" the training images' scores in predict units differ from the Local-Net scores
        tensors["train_predict_scores"] = torch.as_tensor(np.asarray(model.train_predict_scores_, dtype=np.float32))
    directory = directory.resolve()
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        save_file(tensors, str(staging / TENSORS))
        manifest = {
            "format_version": FORMAT_VERSION,
            "config": model.config.to_dict(),
            "pretrained": model.pretrained,
            "backbone": model.backbone.describe(),
            "weights_id": model.weights_id(),
            "tensors_sha256": file_sha256(staging / TENSORS),
            "tensor_shapes": {k: list(v.shape) for k, v in tensors.items()},
            "train_paths": [str(p) for p in model.train_paths_],
            "threshold": float(model.threshold_),
            "contamination": float(model.contamination_),
            "history": [vars(r) for r in model.history_],
            "versions": package_versions(),
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
        if directory.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old.", dir=directory.parent))
            os.replace(directory, retired / directory.name)
            os.replace(staging, directory)
            shutil.rmtree(retired)
        else:
            os.replace(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def read_manifest(directory: Path) -> dict:
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file() or not (directory / TENSORS).is_file():
        raise ModelFormatError(f"{directory} is not a funad model directory (needs {MANIFEST} and {TENSORS})")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as error:
        raise ModelFormatError(f"{manifest_path}: not valid JSON ({error})") from error
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFormatError(f"{manifest_path}: format version {version!r}, this funad reads {FORMAT_VERSION}")
    return manifest


def read_training_scores(directory: Path) -> tuple[list[Path], np.ndarray, float]:
    """Training paths, their scores in predict units and the threshold, without building the backbone."""
    manifest = read_manifest(directory)
    tensors = load_file(str(directory / TENSORS))
    if "threshold" not in manifest:
        raise ModelFormatError(f"{directory / MANIFEST}: no label-free threshold (saved by an older funad; refit)")
    scores = tensors.get("train_predict_scores", tensors["train_scores"]).numpy().astype(np.float64)
    return [Path(p) for p in manifest["train_paths"]], scores, float(manifest["threshold"])


def load_model(directory: Path, **overrides):
    from funad.model import FunAD

    manifest = read_manifest(directory)
    checksum = file_sha256(directory / TENSORS)
    if checksum != manifest["tensors_sha256"]:
        raise ModelFormatError(f"{directory / TENSORS}: checksum mismatch (file altered or corrupt)")
    tensors = load_file(str(directory / TENSORS))
    expected = manifest["tensor_shapes"]
    actual = {k: list(v.shape) for k, v in tensors.items()}
    if actual != expected:
        raise ModelFormatError(f"{directory / TENSORS}: tensors {actual} do not match the manifest {expected}")

    try:
        config = FunADConfig.from_dict(manifest["config"]).to_dict() | overrides
    except (TypeError, ValueError) as error:  # an edited manifest: unknown key or out-of-range value
        raise ModelFormatError(f"{directory / MANIFEST}: invalid configuration ({error})") from error
    model = FunAD(pretrained=manifest["pretrained"], **config)
    if model.backbone.describe() != manifest["backbone"]:
        raise ModelFormatError(f"{directory}: backbone {model.backbone.describe()} differs from the saved "
                               f"{manifest['backbone']}")
    local_state = {k.removeprefix("local_net."): v for k, v in tensors.items() if k.startswith("local_net.")}
    local_net = LocalNet(local_state["adaptor.0.weight"].shape[1], model.config.head_hidden, model.config.leaky_slope)
    try:
        local_net.load_state_dict(local_state)
    except RuntimeError as error:  # e.g. head_hidden edited in the manifest
        raise ModelFormatError(f"{directory}: the saved Local-Net does not fit the configuration in {MANIFEST} "
                               f"({' '.join(str(error).split())})") from error
    model.local_net_ = local_net.eval()
    model.train_paths_ = [Path(p) for p in manifest["train_paths"]]
    model.train_scores_ = tensors["train_scores"].numpy().astype(np.float64)
    model.judged_normal_ = tensors["judged_normal"].numpy().astype(bool)
    model.history_ = [EpochRecord(**r) for r in manifest["history"]]
    if "threshold" not in manifest:
        raise ModelFormatError(f"{directory / MANIFEST}: no label-free threshold (saved by an older funad; refit)")
    model.threshold_, model.contamination_ = float(manifest["threshold"]), float(manifest["contamination"])
    model.train_predict_scores_ = model.train_scores_
    if model.config.scorer == "knn":
        if "knn_bank" not in tensors:
            raise ModelFormatError(f"{directory}: scorer 'knn' but no nearest-neighbour bank was saved")
        model.knn_ = NearestNeighbourScorer(model.config.knn_patch_fraction, model.config.seed).set_bank(
            tensors["knn_bank"])
        model.train_predict_scores_ = tensors["train_predict_scores"].numpy().astype(np.float64)
    return model
