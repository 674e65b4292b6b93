"""Batched feature extraction with parallel image loading, once per image, into an fp16 cache."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from funad.data.images import ImageLoadError, load_image
from funad.features.backbones import Backbone, CNNBackbone, FeatureBatch, Preprocessing
from funad.features.cache import FeatureCache

logger = logging.getLogger(__name__)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but no CUDA device is available")
    return torch.device(device)


def preprocess(image: Image.Image, preprocessing: Preprocessing) -> torch.Tensor:
    size = preprocessing.image_size
    resized = image.resize((size, size), Image.BILINEAR)
    array = np.asarray(resized, dtype=np.float32) / 255.0
    mean = np.asarray(preprocessing.mean, dtype=np.float32)
    std = np.asarray(preprocessing.std, dtype=np.float32)
    return torch.from_numpy(((array - mean) / std).transpose(2, 0, 1).copy())


class _ImageDataset(Dataset):
    """Loads and preprocesses in DataLoader workers; a bad file is reported, not raised."""

    def __init__(self, paths: Sequence[Path], preprocessing: Preprocessing):
        self.paths = list(paths)
        self.preprocessing = preprocessing

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            image = load_image(self.paths[index])
        except ImageLoadError as error:
            size = self.preprocessing.image_size
            return index, torch.zeros(3, size, size), error.reason, 0, 0
        return index, preprocess(image, self.preprocessing), "", image.height, image.width


@dataclass
class ImageBatch:
    indices: list[int]  # positions in the list of paths given to iterate_features
    features: FeatureBatch
    sizes: list[tuple[int, int]]  # original (height, width)
    errors: list[str]  # "" where the image loaded


def iterate_features(backbone: Backbone, paths: Sequence[Path], *, batch_size: int, num_workers: int,
                     device: torch.device, progress: bool, description: str) -> Iterator[ImageBatch]:
    """Backbone features batch by batch, images loaded in parallel worker processes."""
    dataset = _ImageDataset(paths, backbone.preprocessing)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=min(num_workers, len(paths)),
                        pin_memory=device.type == "cuda")
    # oneDNN and cuDNN run convolutions faster on channels-last tensors (EfficientNet-Lite0 on CPU:
    # about 1.25x, docs/speed.md); other backbones keep the layout they were written for.
    layout = torch.channels_last if isinstance(backbone, CNNBackbone) else torch.contiguous_format
    backbone = backbone.to(device, memory_format=layout)
    with tqdm(total=len(paths), desc=description, unit="img", disable=not progress) as bar:
        for indices, images, errors, heights, widths in loader:
            with torch.inference_mode():
                features = backbone(images.to(device, non_blocking=True, memory_format=layout))
            yield ImageBatch(indices.tolist(), features, list(zip(heights.tolist(), widths.tolist())), list(errors))
            bar.update(len(indices))


@dataclass
class FeatureSet:
    """Per-image features (fp16, possibly memory-mapped) for a list of images.

    ``patches[i]`` is ``[K, D]`` on ``grid``; ``globals_[i]`` is ``[G]``.
    """

    paths: list[Path]
    patches: list[np.ndarray]
    globals_: list[np.ndarray]
    grid: tuple[int, int]
    failures: dict[Path, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.paths)

    def method_features(self, level: str) -> "MethodFeatures":
        if level == "image":
            return MethodFeatures([g[None, :] for g in self.globals_])
        return MethodFeatures(self.patches)


class MethodFeatures:
    """The features the method trains on: ``[N, K, D]`` (K = 1 in image mode), read lazily."""

    def __init__(self, arrays: list[np.ndarray]):
        self.arrays = arrays
        self.num_patches, self.dim = arrays[0].shape if arrays else (0, 0)

    def __len__(self) -> int:
        return len(self.arrays)

    def take(self, indices: Sequence[int], positions: np.ndarray | None = None) -> torch.Tensor:
        """float32 ``[len(indices), P, D]``; ``positions`` selects the same patches in every image."""
        return self.take_rows(indices, [positions] * len(indices))

    def take_rows(self, indices: Sequence[int], positions: Sequence[np.ndarray | None]) -> torch.Tensor:
        """float32 ``[len(indices), P, D]`` with each image's own ``positions`` (all of the same length)."""
        rows = [self.arrays[i] if kept is None else self.arrays[i][kept] for i, kept in zip(indices, positions)]
        return torch.from_numpy(np.stack(rows).astype(np.float32))


def extract_features(
    backbone: Backbone,
    paths: Sequence[Path],
    *,
    cache: FeatureCache | None = None,
    batch_size: int = 16,
    num_workers: int = 2,
    device: torch.device | str = "cpu",
    progress: bool = True,
    description: str = "features",
) -> FeatureSet:
    """Features of every image in ``paths``; images already in ``cache`` are not run again.

    Images that fail to load are listed in ``FeatureSet.failures`` and left out; every image
    extracted so far is already in the cache, so an interruption loses no finished work.
    """
    paths = [Path(p) for p in paths]
    device = torch.device(device)
    patches: dict[int, np.ndarray] = {}
    globals_: dict[int, np.ndarray] = {}
    keys = [cache.key(path) for path in paths] if cache else [None] * len(paths)
    todo = []
    for index, key in enumerate(keys):
        hit = cache.get(key) if cache else None
        if hit is None:
            todo.append(index)
        else:
            patches[index], globals_[index] = hit
    if cache and len(todo) < len(paths):
        logger.info("feature cache: %d of %d images already extracted", len(paths) - len(todo), len(paths))

    failures: dict[Path, str] = {}
    if todo:
        batches = iterate_features(backbone, [paths[i] for i in todo], batch_size=batch_size,
                                   num_workers=num_workers, device=device, progress=progress,
                                   description=description)
        for batch in batches:
            batch_patches = batch.features.patches.to(torch.float16).cpu().numpy()
            batch_globals = batch.features.global_.to(torch.float16).cpu().numpy()
            for row, local_index in enumerate(batch.indices):
                index = todo[local_index]
                if batch.errors[row]:
                    failures[paths[index]] = batch.errors[row]
                elif cache:
                    patches[index], globals_[index] = cache.put(keys[index], batch_patches[row], batch_globals[row])
                else:
                    patches[index], globals_[index] = batch_patches[row], batch_globals[row]
    kept = [i for i in range(len(paths)) if i in patches]
    return FeatureSet(
        paths=[paths[i] for i in kept],
        patches=[patches[i] for i in kept],
        globals_=[globals_[i] for i in kept],
        grid=backbone.grid,
        failures=failures,
    )
