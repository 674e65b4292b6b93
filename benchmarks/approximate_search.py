"""Exact against approximate (IVF) nearest-neighbour search on real patch features: speed and recall@1.

Keys are the patches of some cached images, queries the patches of other images (as a bank is
searched by new images). For each bank size: the flat index's search time, the IVF index's
training and search time, and recall@1 (the share of queries whose IVF neighbour is the exact one)
for several ``nprobe``. Chooses ``funad.inference.search.APPROXIMATE_MIN_KEYS`` (docs/scale.md).

    python benchmarks/approximate_search.py ~/.cache/funad/features/<fingerprint> --sizes 4096 16384 65536
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import faiss
import numpy as np

from funad.inference.search import FlatIndex, IVFIndex


def load_patches(folder: Path, count: int, seed: int) -> np.ndarray:
    """float32 ``[N, D]``, N >= ``count``: every patch of as many cached images, drawn at random, as it takes."""
    files = sorted(folder.glob("*.patches.npy"))
    per_image = np.load(files[0], mmap_mode="r").shape[0] if files else 1  # the backbone's grid, read once
    images = -(-count // per_image)
    if len(files) < images:
        raise SystemExit(f"{folder} holds {len(files)} images' features, {images} are needed")
    chosen = np.random.default_rng(seed).choice(len(files), images, replace=False)
    return np.concatenate([np.load(files[i]).astype(np.float32) for i in chosen])


def best_of(repeats: int, run) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cache", type=Path, help="a feature-cache folder (one backbone's fingerprint)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384, 65536, 131072])
    parser.add_argument("--queries", type=int, default=8192)
    parser.add_argument("--nprobe", type=int, nargs="+", default=[4, 8, 16, 32])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="faiss threads (default: faiss's own)")
    args = parser.parse_args(argv)
    if args.threads:
        faiss.omp_set_num_threads(args.threads)

    patches = load_patches(args.cache, max(args.sizes) + args.queries, seed=0)
    queries, pool = patches[:args.queries], patches[args.queries:]
    print(f"load average {os.getloadavg()[0]:.2f}; queries {len(queries)}, dim {patches.shape[1]}")
    for size in args.sizes:
        keys = pool[np.random.default_rng(size).choice(len(pool), size, replace=False)]
        flat = FlatIndex(keys)
        exact = flat.search(queries)[1][:, 0]
        flat_seconds = best_of(args.repeats, lambda: flat.search(queries))  # noqa: B023  # called at once
        start = time.perf_counter()
        ivf = IVFIndex(keys)
        build = time.perf_counter() - start
        for nprobe in args.nprobe:
            ivf.nprobe = nprobe  # the measured knob, on the index already built
            found = ivf.search(queries)[1][:, 0]
            seconds = best_of(args.repeats, lambda: ivf.search(queries))  # noqa: B023  # called at once
            print(f"keys={size} exact_s={flat_seconds:.3f} ivf_build_s={build:.2f} nprobe={nprobe} "
                  f"ivf_s={seconds:.3f} speedup={flat_seconds / seconds:.2f} recall1={np.mean(found == exact):.4f}",
                  flush=True)
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
