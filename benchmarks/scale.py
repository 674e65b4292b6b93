"""Wall time and peak memory of every stage of a fit (and of predict's scoring) against the number of images.

Synthetic fp16 features are written through the real feature cache (no images, no backbone:
the backbone's cost per image is constant and in docs/speed.md), then each stage runs the real
funad function on them, in the order ``FunAD.fit_features`` runs them:

* ``cache_write`` / ``cache_open``: ``FeatureCache.put`` and ``get`` of every image;
* ``bank_rebuild``: one IRMB rebuild (the Local-Net scores every image, then the bank is drawn);
  an epoch has one, and the final bank is one more;
* ``epoch_iterations``: the training iterations of one epoch (``Trainer.step``);
* ``knn_fit``: the knn scorer's bank (uniform pool, greedy coreset, corroboration, vouched for in
  every pose of the default's ``knn_corroboration_views``);
* ``training_scores``: every image scored without its own bank entries;
* ``threshold``: the label-free threshold on N scores; ``pixel_threshold``: the pixel threshold;
* ``predict_scoring``: scoring and mapping the images' features (predict without the backbone).

``--max-iterations`` / ``--max-scored-images`` bound the stages whose cost is a sum over
batches or images: they time that many and scale the time by the full count (the line says
``extrapolated=1``). Peak RSS is per stage: the kernel's high-water mark (``VmHWM``) is reset
before each stage (``/proc/self/clear_refs``), so a stage's figure is the most memory the process
held during it. Each size runs in a subprocess of its own. The last lines give each stage's
growth factor per 10x images (time ratio scaled to a factor of 10 in size), per doubling, and
per doubling of the time per image (1.0: linear).

    PYTHONPATH=src python benchmarks/scale.py --sizes 1000 10000 100000
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from funad.config import FunADConfig
from funad.features.cache import FeatureCache
from funad.features.containers import MethodFeatures
from funad.inference.regions import training_pixel_threshold
from funad.inference.scorers.registry import create_scorer, training_views
from funad.inference.scoring import score_images
from funad.method.threshold import estimate_threshold
from funad.method.trainer import Trainer, make_state

#: Distinct synthetic images; image i is block i mod this, shifted by a per-image constant
#: (drawing 100 000 x 256 x 384 normal numbers would take longer than the stages measured).
DISTINCT_IMAGES = 256


def peak_reset() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float:
    """The process's resident high-water mark since the last :func:`peak_reset`, MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_size(images: int, patches: int, dim: int, folder: Path, max_iterations: int,
             max_scored: int) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []

    def stage(name: str, run: Callable[[], Any], scale: float = 1.0) -> Any:
        peak_reset()
        started, cpu_started = time.perf_counter(), time.process_time()
        value = run()
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        results.append({"stage": name, "images": images, "seconds": seconds * scale, "cpu_seconds": cpu * scale,
                        "peak_rss_mb": peak_rss_mb(), "extrapolated": int(scale != 1.0)})
        print(line(results[-1]), flush=True)
        return value

    config = FunADConfig()
    device = torch.device("cpu")
    cache = FeatureCache(folder, {"grid": [1, patches], "patch_dim": dim, "global_dim": 1}, "synthetic")

    def write_all() -> None:
        rng = np.random.default_rng(0)
        blocks = rng.standard_normal((min(images, DISTINCT_IMAGES), patches, dim), dtype=np.float32)
        shifts = rng.standard_normal(images, dtype=np.float32) * 0.1
        for i in range(images):
            cache.put(f"image{i}", blocks[i % len(blocks)] + shifts[i], np.zeros(1))

    stage("cache_write", write_all)

    def open_all() -> MethodFeatures:
        hits = [cache.get(f"image{i}") for i in range(images)]
        arrays = [hit[0] for hit in hits if hit is not None]
        # The default scorer's poses of each image: the same arrays stand in (the search costs the same;
        # extracting real views is backbone time, per image, in docs/speed.md).
        return MethodFeatures(arrays, {view: MethodFeatures(arrays) for view in training_views(config)})

    features = stage("cache_open", open_all)
    trainer = Trainer(config, features, device)
    state = make_state(config, dim, device)
    bank = stage("bank_rebuild", lambda: trainer._bank(state))  # one rebuild, as an epoch runs it
    order = state.rng.permutation(images)
    batches = [order[i:i + config.batch_size] for i in range(0, images, config.batch_size)]
    timed = batches[:max_iterations]
    stage("epoch_iterations", lambda: [trainer.step(state, batch, bank) for batch in timed], len(batches) / len(timed))
    local_net = state.local_net.eval()
    trusted = np.arange(images)
    scorer = stage("knn_fit", lambda: create_scorer(config, local_net).fit(features, trusted))
    scored = min(images, max_scored)
    stage("training_scores", lambda: scorer.score_training_images(features.head(scored)), images / scored)
    scores = bank.image_scores
    estimate = stage("threshold", lambda: estimate_threshold(scores, bank.candidate_normals))
    stage("pixel_threshold", lambda: training_pixel_threshold(scorer, features, np.flatnonzero(
        scores <= estimate.threshold), seed=config.seed))
    grid, size = (1, patches), 224

    def predict() -> None:
        for start in range(0, scored, config.batch_size_extract):
            batch = features.take(range(start, min(start + config.batch_size_extract, scored)))
            score_images(scorer, batch, grid, size, config.map_sigma)

    stage("predict_scoring", predict, images / scored)
    return results


def line(result: dict[str, Any]) -> str:
    return (f"stage={result['stage']} images={result['images']} seconds={result['seconds']:.2f} "
            f"peak_rss_mb={result['peak_rss_mb']:.0f} cpu_seconds={result['cpu_seconds']:.2f} "
            f"extrapolated={result['extrapolated']}")


def growth(results: list[dict[str, Any]]) -> list[str]:
    """Per stage: the time ratio between consecutive sizes, scaled to a 10x step in images."""
    lines = []
    for name in dict.fromkeys(r["stage"] for r in results):
        rows = sorted((r for r in results if r["stage"] == name), key=lambda r: r["images"])
        for small, large in zip(rows, rows[1:]):
            exponent = math.log(max(large["seconds"], 1e-6) / max(small["seconds"], 1e-6)) / math.log(
                large["images"] / small["images"])
            # per image: 1.0 is linear in the number of images, below 1 sublinear.
            lines.append(f"growth stage={name} images={small['images']}->{large['images']} "
                         f"per_10x={10 ** exponent:.1f} per_doubling={2 ** exponent:.2f} "
                         f"per_image_per_doubling={2 ** (exponent - 1):.2f} "
                         f"rss_ratio={large['peak_rss_mb'] / small['peak_rss_mb']:.2f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--patches", type=int, default=256, help="patches per image (DINOv2 at 224 px: 256)")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--max-iterations", type=int, default=50, help="training iterations timed per epoch")
    parser.add_argument("--max-scored-images", type=int, default=2000,
                        help="images timed in the per-image stages (training scores, predict scoring)")
    parser.add_argument("--folder", type=Path, default=None, help="where the synthetic cache goes (default: a "
                                                                   "temporary folder, removed after each size)")
    parser.add_argument("--one-size", type=int, default=None, help=argparse.SUPPRESS)  # the per-size subprocess
    args = parser.parse_args()

    if args.one_size is not None:
        if args.folder:
            args.folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="funad-scale-", dir=args.folder) as folder:
            results = run_size(args.one_size, args.patches, args.dim, Path(folder), args.max_iterations,
                               args.max_scored_images)
        print("RESULTS " + json.dumps(results))
        return
    print(f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    results = []
    for size in args.sizes:
        command = [sys.executable, __file__, "--one-size", str(size), "--patches", str(args.patches),
                   "--dim", str(args.dim), "--max-iterations", str(args.max_iterations),
                   "--max-scored-images", str(args.max_scored_images)]
        if args.folder:
            command += ["--folder", str(args.folder)]
        # stderr passes through: a failing size shows its traceback.
        output = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout
        for text in output.splitlines():
            if text.startswith("RESULTS "):
                results += json.loads(text.removeprefix("RESULTS "))
            else:
                print(text, flush=True)
    for text in growth(results):
        print(text)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
