"""Batched feature extraction with parallel image loading, once per image, into an fp16 cache; sharded by image
over torchrun's ranks."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from funad.data.images import ImageLoadError, ImageSource, load_image
from funad.data.preprocessing import Preprocessing, backbone_input, view_of
from funad.features.backbones.base import Backbone
from funad.features.cache import FeatureCache
from funad.features.containers import FeatureBatch, FeatureSet, PatchArray
from funad.utils import distributed
from funad.utils.pose import ObjectPose

logger = logging.getLogger(__name__)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but no CUDA device is available")
    return torch.device(device)


def preprocess(image: Image.Image, preprocessing: Preprocessing,
               view: str | None = None) -> tuple[torch.Tensor, ObjectPose | None]:
    """The backbone input of ``image``, in pose ``view`` (:data:`funad.data.preprocessing.VIEWS`) if given, and the
    object pose it was turned from (None: not turned; ``Preprocessing.align_object``), which its map is turned by."""
    array, pose = backbone_input(image, preprocessing)
    return torch.from_numpy(array if view is None else view_of(array, view)), pose


class _ImageDataset(Dataset):
    """Loads and preprocesses in DataLoader workers; a bad file is reported, not raised.

    A source is an image file, or an image already decoded to RGB (in-memory input); ``view``:
    every image in that pose. ``keep_images``: each item also carries its decoded image (else None).
    """

    def __init__(self, sources: Sequence[ImageSource], preprocessing: Preprocessing, view: str | None = None,
                 keep_images: bool = False):
        self.sources = list(sources)
        self.preprocessing = preprocessing
        self.view = view
        self.keep_images = keep_images

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int):
        source = self.sources[index]
        try:
            image = load_image(source) if isinstance(source, Path) else source
        except ImageLoadError as error:
            size = self.preprocessing.image_size
            return index, torch.zeros(3, size, size), error.reason, 0, 0, None, None
        array, pose = preprocess(image, self.preprocessing, self.view)
        return index, array, "", image.height, image.width, image if self.keep_images else None, pose


def _collate(items: list[tuple]) -> tuple:
    """A batch of :class:`_ImageDataset` items: tensors stacked, errors, images and poses as lists."""
    indices, inputs, errors, heights, widths, images, poses = zip(*items)
    return (torch.tensor(indices), torch.stack(inputs), list(errors), torch.tensor(heights), torch.tensor(widths),
            list(images), list(poses))


def place_backbone(backbone: Backbone, device: torch.device) -> Backbone:
    """Move ``backbone`` (in place) to ``device``, its weights in the memory layout it runs fastest in."""
    return backbone.to(device).to(memory_format=backbone.memory_format)


@dataclass
class ImageBatch:
    indices: list[int]  # positions in the list of sources given to iterate_features
    features: FeatureBatch
    sizes: list[tuple[int, int]]  # original (height, width)
    errors: list[str]  # "" where the image loaded
    images: list[Image.Image | None]  # the decoded images, with ``keep_images``; else None
    poses: list[ObjectPose | None]  # the poses the images were turned from (Preprocessing.align_object)


def iterate_features(backbone: Backbone, sources: Sequence[ImageSource], *, batch_size: int, num_workers: int,
                     device: torch.device, progress: bool, description: str,
                     view: str | None = None, keep_images: bool = False) -> Iterator[ImageBatch]:
    """Backbone features batch by batch, image files loaded in parallel worker processes.

    The backbone is used as it is: it must already be on ``device`` (:func:`place_backbone`).
    ``view``: of every image in that pose (:data:`funad.data.preprocessing.VIEWS`). ``keep_images``:
    each batch also holds its decoded RGB images, for whoever draws on them next (no second decode).
    """
    dataset = _ImageDataset(sources, backbone.preprocessing, view, keep_images)
    # A generator of its own: the loader draws its workers' base seed from it, not from torch's global RNG.
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=min(num_workers, len(sources)),
                        collate_fn=_collate, pin_memory=device.type == "cuda", generator=torch.Generator())
    layout = backbone.memory_format
    with tqdm(total=len(sources), desc=description, unit="img", disable=not progress) as bar:
        for indices, inputs, errors, heights, widths, images, poses in loader:
            with torch.inference_mode():
                features = backbone(inputs.to(device, non_blocking=True, memory_format=layout))
            # Counted before the batch is handed on: a consumer that stops asking after the last batch never
            # resumes this generator, and the bar would stop one batch short.
            bar.update(len(indices))
            yield ImageBatch(indices.tolist(), features, list(zip(heights.tolist(), widths.tolist())), errors, images,
                             poses)


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
    view: str | None = None,
) -> FeatureSet:
    """Features of every image in ``paths`` (in pose ``view`` if given); images already in ``cache`` are not run again.

    Images that fail to load are listed in ``FeatureSet.failures`` and left out; every image
    extracted so far is already in the cache, so an interruption loses no finished work.
    """
    paths = [Path(p) for p in paths]
    device = torch.device(device)
    patches: dict[int, PatchArray] = {}
    globals_: dict[int, np.ndarray] = {}
    keys = [cache.key(path, view) for path in paths] if cache else [""] * len(paths)
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
                                   description=description, view=view)
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


# Images per rank per message while the ranks exchange their features: bounds what is in transit
# (at 256 x 768 fp16 patches, 32 images are 12 MB a rank).
GATHER_CHUNK = 32


def extract_features_sharded(backbone: Backbone, paths: Sequence[Path], *, cache: FeatureCache | None = None,
                             view: str | None = None, **options: Any) -> FeatureSet:
    """:func:`extract_features` with each of torchrun's ranks extracting its block of ``paths``.

    Every rank returns the features of all ``paths`` in their order (as one process would): the
    ranks exchange them through ``torch.distributed`` (no shared disk needed), and a rank with a
    ``cache`` stores what it receives there (memory-mapped, and a rerun on that machine extracts
    nothing). In one process this is :func:`extract_features`.
    """
    paths = [Path(p) for p in paths]
    mine = distributed.block(len(paths))
    local = extract_features(backbone, paths[mine.start:mine.stop], cache=cache, view=view, **options)
    if distributed.world_size() == 1:
        return local
    # Says that the work is shared: the ranks' counts add up to the number of images.
    logger.info("rank=%d world_size=%d images=%d", distributed.rank(), distributed.world_size(), len(mine))
    failed = {index: local.failures[path] for index, path in enumerate(paths[mine.start:mine.stop], mine.start)
              if path in local.failures}
    kept = [index for index in mine if index not in failed]
    keys = [cache.key(paths[index], view) for index in kept] if cache else []
    shares = distributed.gather_objects((kept, failed, keys))
    patches: dict[int, PatchArray] = {}
    globals_: dict[int, np.ndarray] = {}
    rounds = max(len(share_kept) for share_kept, _, _ in shares)
    for start in range(0, rounds, GATHER_CHUNK):
        sizes = [len(share_kept[start:start + GATHER_CHUNK]) for share_kept, _, _ in shares]
        rows = slice(start, start + sizes[distributed.rank()])
        mine_patches = [np.asarray(patch) for patch in local.patches[rows]]  # cached ones are read here
        sent_patches = torch.from_numpy(np.stack(mine_patches) if mine_patches else
                                        np.zeros((0, *_patch_shape(backbone)), np.float16))
        sent_globals = torch.from_numpy(np.stack(local.globals_[rows]) if local.globals_[rows] else
                                        np.zeros((0, backbone.global_dim), np.float16))
        received = zip(distributed.gather_rows(sent_patches, sizes).numpy(),
                       distributed.gather_rows(sent_globals, sizes).numpy())
        for (share_kept, _, share_keys), size in zip(shares, sizes):
            for offset in range(start, start + size):
                index = share_kept[offset]
                patch, global_ = next(received)
                if cache:
                    stored = cache.get(share_keys[offset])  # on a shared disk the extracting rank wrote it
                    patches[index], globals_[index] = stored or cache.put(share_keys[offset], patch, global_)
                else:
                    patches[index], globals_[index] = patch, global_
    failures = {paths[index]: reason for _, share_failed, _ in shares for index, reason in share_failed.items()}
    order = sorted(patches)
    return FeatureSet([paths[i] for i in order], [patches[i] for i in order], [globals_[i] for i in order],
                      backbone.grid, failures)


def _patch_shape(backbone: Backbone) -> tuple[int, int]:
    return backbone.num_patches, backbone.patch_dim
