"""Feature extraction speed of a backbone at several input sizes: images per second and CPU seconds per image.

The same images at each ``--sizes`` (decode, square resize, forward, batches of ``--batch-size``,
no DataLoader workers by default, no feature cache), after one untimed warm-up batch that builds
the session. CPU seconds are this process's, every thread (``time.process_time``); DataLoader
workers (``--workers``) are not counted, so the CPU figure holds with the default 0 (funad's
default on 2 cores). Sizes are interleaved over ``--repeats`` rounds so that a change of load hits
all alike; the best round of each size is reported with the load average. One JSON line per size
and round to ``--out`` (optional), and a table::

    PYTHONPATH=src python benchmarks/extraction_speed.py ../shared/data/mvtec/screw/train/good \\
        --sizes 224 322 448 --count 48 --out runs/extraction_speed.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from funad.data.images import discover_images
from funad.features.backbones.registry import create_backbone
from funad.features.extraction import extract_features, place_backbone

DEFAULT_BACKBONE = "imgfocus_dinov2_vits14"


def time_size(backbone_name: str, size: int, paths: list[Path], batch_size: int, workers: int,
              pretrained: bool = True) -> dict[str, Any]:
    """One timed extraction of ``paths`` at ``size`` px (after an untimed warm-up batch)."""
    backbone = place_backbone(create_backbone(backbone_name, pretrained=pretrained, image_size=size), "cpu")
    options = dict(batch_size=batch_size, num_workers=workers, device="cpu", progress=False)
    extract_features(backbone, paths[:batch_size], **options)  # the session is built here
    load_before = os.getloadavg()[0]
    wall, cpu = time.perf_counter(), time.process_time()
    features = extract_features(backbone, paths, **options)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if features.failures:
        raise ValueError(f"{len(features.failures)} images could not be read")
    return {"backbone": backbone_name, "image_size": size, "grid": list(backbone.grid), "images": len(paths),
            "batch_size": batch_size, "workers": workers, "wall_seconds": wall, "cpu_seconds": cpu,
            "images_per_second": len(paths) / wall, "cpu_seconds_per_image": cpu / len(paths),
            "load_average_before": load_before, "load_average_after": os.getloadavg()[0],
            "cores": os.cpu_count()}


def table(records: list[dict[str, Any]]) -> str:
    """Markdown, the fastest round of each size."""
    best: dict[int, dict[str, Any]] = {}
    for record in records:
        size = record["image_size"]
        if size not in best or record["wall_seconds"] < best[size]["wall_seconds"]:
            best[size] = record
    lines = ["| px | grid | images | img/s | CPU s / image | load average (before, after) |",
             "|---|---|---|---|---|---|"]
    for size, record in sorted(best.items()):
        lines.append(f"| {size} | {record['grid'][0]}x{record['grid'][1]} | {record['images']} | "
                     f"{record['images_per_second']:.2f} | {record['cpu_seconds_per_image']:.3f} | "
                     f"{record['load_average_before']:.2f}, {record['load_average_after']:.2f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", type=Path, help="image files or folders")
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 322, 448])
    parser.add_argument("--count", type=int, default=48, metavar="N", help="the first N images (sorted)")
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE)
    parser.add_argument("--random-weights", action="store_true", help="random weights (tests; not the ONNX graph)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, help="JSON lines file the records are appended to")
    args = parser.parse_args(argv)
    paths = sorted(discover_images(args.images))[:args.count]
    if not paths:
        parser.error("no images found")
    records = []
    for _ in range(args.repeats):
        for size in args.sizes:
            record = time_size(args.backbone, size, paths, args.batch_size, args.workers, not args.random_weights)
            records.append(record)
            if args.out is not None:
                args.out.parent.mkdir(parents=True, exist_ok=True)
                with open(args.out, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(record) + "\n")
    print(table(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
