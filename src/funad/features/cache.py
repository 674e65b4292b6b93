"""A content-addressed, memory-mapped fp16 feature cache.

Layout: ``root/<fingerprint>/<sha1 of the image file>.{patches,global}.npy`` where the
fingerprint hashes everything that changes features (backbone, its weights, preprocessing).
A cache written by another backbone or preprocessing lives under another fingerprint, so it
is never used by mistake; ``meta.json`` in each folder says what produced it.
"""

from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from funad.utils.files import file_digest, json_digest, write_atomically, write_text_atomically

FEATURE_FORMAT_VERSION = 1


def _cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "funad"


def default_cache_dir() -> Path:
    if "FUNAD_CACHE_DIR" in os.environ:
        return Path(os.environ["FUNAD_CACHE_DIR"])
    return _cache_home() / "features"


def default_graph_cache_dir() -> Path:
    """Where graphs derived from a backbone's (the int8 ONNX graph) are kept: beside the feature
    cache, or inside ``FUNAD_CACHE_DIR`` when that is set (its feature folders are hex digests)."""
    if "FUNAD_CACHE_DIR" in os.environ:
        return Path(os.environ["FUNAD_CACHE_DIR"]) / "graphs"
    return _cache_home() / "graphs"


def backbone_fingerprint(description: dict, weights_id: str) -> str:
    # sha1 as the cache was first filed: another digest would orphan every cached feature.
    return json_digest({"backbone": description, "weights": weights_id, "format": FEATURE_FORMAT_VERSION}, "sha1")[:16]


class CachedPatches:
    """One image's cached ``[K, D]`` fp16 patches, memory-mapped only while they are read.

    Holding every image's memory map open would need one mapping per image, and Linux allows a
    process 65 530 by default (``vm.max_map_count``): with both the patch and the global map held,
    a fit would fail past about 32 000 cached images. Opening a ``.npy`` costs tens of
    microseconds, next to milliseconds of work on the patches it returns.
    """

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype):
        self.path = path
        self.shape = shape
        self.dtype = dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.array(np.load(self.path, mmap_mode="r")[key])  # a copy: the map closes on return

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        return np.load(self.path).astype(dtype or self.dtype, copy=False)


class FeatureCache:
    def __init__(self, root: str | Path, description: dict, weights_id: str):
        self.fingerprint = backbone_fingerprint(description, weights_id)
        self.folder = Path(root) / self.fingerprint
        self.folder.mkdir(parents=True, exist_ok=True)
        self.description = description
        meta = self.folder / "meta.json"
        if meta.exists():
            recorded = json.loads(meta.read_text())
            if recorded.get("backbone") != description:
                raise RuntimeError(f"feature cache {self.folder} was written by another backbone: {recorded}")
        else:
            write_text_atomically(meta, json.dumps({"backbone": description, "weights": weights_id,
                                                    "format": FEATURE_FORMAT_VERSION}, indent=2))

    @staticmethod
    def key(path: str | Path, view: str | None = None) -> str:
        """The image file's content hash (a renamed or moved file still hits the cache), and the view if any."""
        digest = file_digest(path, "sha1")
        return digest if view is None else f"{digest}.{view}"

    def _files(self, key: str) -> tuple[Path, Path]:
        return self.folder / f"{key}.patches.npy", self.folder / f"{key}.global.npy"

    def get(self, key: str) -> tuple[CachedPatches, np.ndarray] | None:
        """The image's patches (read from the file on access) and its global feature (in memory); None if absent."""
        patch_file, global_file = self._files(key)
        if not (patch_file.exists() and global_file.exists()):
            return None
        try:
            mapped = np.load(patch_file, mmap_mode="r")
            global_ = np.load(global_file)
        except (ValueError, OSError):  # a torn write from a killed run: extract again
            return None
        patches = CachedPatches(patch_file, mapped.shape, mapped.dtype)
        del mapped
        expected = (self.description["grid"][0] * self.description["grid"][1], self.description["patch_dim"])
        global_shape = (self.description["global_dim"],)
        if patches.shape != expected or patches.dtype != np.float16 or global_.shape != global_shape:
            return None
        return patches, global_

    def put(self, key: str, patches: np.ndarray, global_: np.ndarray) -> tuple[CachedPatches, np.ndarray]:
        """Write atomically (temporary name, then rename) and return what :meth:`get` returns."""
        for target, array in zip(self._files(key), (patches, global_)):
            write_atomically(target, partial(np.save, arr=np.ascontiguousarray(array, dtype=np.float16)))
        stored = self.get(key)
        if stored is None:  # a file written this moment does not read back: the disk, not the data
            raise OSError(f"feature cache {self.folder}: the features just written for {key} do not read back")
        return stored
