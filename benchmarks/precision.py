"""Backbone throughput per precision: fp32 against int8, interleaved in one process.

Decodes and resizes the images once, then times the backbone's forward pass alone (the only
step the precision changes) over all of them in batches, fp32 and int8 in turn, ``--repeats``
times; prints the median images/s and CPU seconds of each, the speed-up, the load average
before and after, and how close the int8 patch features stay to fp32 (cosine per patch).

    python benchmarks/precision.py ../shared/data/mvtec/bottle/test
    python benchmarks/precision.py IMAGES --batch 16 --repeats 3 --limit 83
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
from PIL import Image

from funad.data.images import discover_images
from funad.data.preprocessing import normalised_array
from funad.features.backbones import create_backbone

PRECISIONS = ("fp32", "int8")


def load_batches(folder: Path, size: int, mean, std, batch: int, limit: int | None) -> list[torch.Tensor]:
    paths = sorted(discover_images(folder))[:limit]
    arrays = [torch.from_numpy(normalised_array(Image.open(path).convert("RGB"), size, mean, std)) for path in paths]
    return [torch.stack(arrays[start:start + batch]) for start in range(0, len(arrays), batch)]


def timed_pass(backbone, batches: list[torch.Tensor]) -> tuple[float, float, list[torch.Tensor]]:
    """Wall and CPU seconds of one forward pass over ``batches``, and the patch features."""
    wall, cpu = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        patches = [backbone(images).patches for images in batches]
    return time.perf_counter() - wall, time.process_time() - cpu, patches


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", type=Path, help="folder of images (searched recursively)")
    parser.add_argument("--backbone", default="imgfocus_dinov2_vits14")
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None, help="at most this many images")
    args = parser.parse_args(argv)

    backbones = {precision: create_backbone(args.backbone, image_size=args.image_size, precision=precision)
                 for precision in PRECISIONS}
    pre = backbones["fp32"].preprocessing
    batches = load_batches(args.images, pre.image_size, pre.mean, pre.std, args.batch, args.limit)
    count = sum(len(images) for images in batches)
    print(f"images={count} batch={args.batch} threads={torch.get_num_threads()} "
          f"load_before={' '.join(f'{value:.2f}' for value in os.getloadavg())}")
    for precision in PRECISIONS:  # warm-up: session creation and first-run allocations
        timed_pass(backbones[precision], batches[:1])
    walls: dict[str, list[float]] = {precision: [] for precision in PRECISIONS}
    cpus: dict[str, list[float]] = {precision: [] for precision in PRECISIONS}
    features = {}
    for _ in range(args.repeats):
        for precision in PRECISIONS:
            wall, cpu, features[precision] = timed_pass(backbones[precision], batches)
            walls[precision].append(wall)
            cpus[precision].append(cpu)
    for precision in PRECISIONS:
        print(f"precision={precision} images_per_s={count / statistics.median(walls[precision]):.2f} "
              f"cpu_s={statistics.median(cpus[precision]):.2f} "
              f"runs_images_per_s={','.join(f'{count / wall:.2f}' for wall in walls[precision])}")
    speedup = statistics.median(walls["fp32"]) / statistics.median(walls["int8"])
    cpu_ratio = statistics.median(cpus["fp32"]) / statistics.median(cpus["int8"])
    full = torch.cat(features["fp32"]).flatten(0, 1)
    quantized = torch.cat(features["int8"]).flatten(0, 1)
    cosine = torch.nn.functional.cosine_similarity(full, quantized, dim=1)
    print(f"speedup_wall={speedup:.2f} speedup_cpu={cpu_ratio:.2f} "
          f"cosine_median={cosine.median():.4f} cosine_min={cosine.min():.4f} "
          f"load_after={' '.join(f'{value:.2f}' for value in os.getloadavg())}")


if __name__ == "__main__":
    main()
