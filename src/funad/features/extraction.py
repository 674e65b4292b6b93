"""Batched feature extraction with parallel image loading, once per image, into an fp16 cache."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from funad.data.images import ImageLoadError, ImageSource, load_image
from funad.data.preprocessing import normalised_array
from funad.features.backbones.base import Backbone, Preprocessing
from funad.features.cache import FeatureCache
from funad.features.containers import FeatureBatch, FeatureSet, PatchArray

logger = logging.getLogger(__name__)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but no CUDA device is available")
    return torch.device(device)


def preprocess(image: Image.Image, preprocessing: Preprocessing) -> torch.Tensor:
    return torch.from_numpy(normalised_array(image, preprocessing.image_size, preprocessing.mean, preprocessing.std))


class _ImageDataset(Dataset):
    """Loads and preprocesses in DataLoader workers; a bad file is reported, not raised.

    A source is an image file, or an image already decoded to RGB (in-memory input).
    """

    def __init__(self, sources: Sequence[ImageSource], preprocessing: Preprocessing):
        self.sources = list(sources)
        self.preprocessing = preprocessing

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int):
        source = self.sources[index]
        try:
            image = load_image(source) if isinstance(source, Path) else source
        except ImageLoadError as error:
            size = self.preprocessing.image_size
            return index, torch.zeros(3, size, size), error.reason, 0, 0
        return index, preprocess(image, self.preprocessing), "", image.height, image.width


def place_backbone(backbone: Backbone, device: torch.device) -> Backbone:
    """Move ``backbone`` (in place) to ``device``, its weights in the memory layout it runs fastest in."""
    return backbone.to(device).to(memory_format=backbone.memory_format)


@dataclass
class ImageBatch:
    indices: list[int]  # positions in the list of sources given to iterate_features
    features: FeatureBatch
    sizes: list[tuple[int, int]]  # original (height, width)
    errors: list[str]  # "" where the image loaded


def iterate_features(backbone: Backbone, sources: Sequence[ImageSource], *, batch_size: int, num_workers: int,
                     device: torch.device, progress: bool, description: str) -> Iterator[ImageBatch]:
    """Backbone features batch by batch, image files loaded in parallel worker processes.

    The backbone is used as it is: it must already be on ``device`` (:func:`place_backbone`).
    """
    dataset = _ImageDataset(sources, backbone.preprocessing)
    # A generator of its own: the loader draws its workers' base seed from it, not from torch's global RNG.
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=min(num_workers, len(sources)),
                        pin_memory=device.type == "cuda", generator=torch.Generator())
    layout = backbone.memory_format
    with tqdm(total=len(sources), desc=description, unit="img", disable=not progress) as bar:
        for indices, images, errors, heights, widths in loader:
            with torch.inference_mode():
                features = backbone(images.to(device, non_blocking=True, memory_format=layout))
            yield ImageBatch(indices.tolist(), features, list(zip(heights.tolist(), widths.tolist())), list(errors))
            bar.update(len(indices))


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
    patches: dict[int, PatchArray] = {}
    globals_: dict[int, np.ndarray] = {}
    keys = [cache.key(path) for path in paths] if cache else [""] * len(paths)
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
