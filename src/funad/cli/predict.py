"""`funad predict MODEL_DIR IMAGES... --out OUT_DIR`: scores.csv, maps/*.npy, heatmaps/*.png."""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    parser = subparsers.add_parser("predict", help="score and map images with a fitted model")
    parser.add_argument("model", type=Path, help="model directory written by `funad fit`")
    parser.add_argument("images", nargs="+", help="image files and/or folders")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--device", default=None, help="auto | cpu | cuda")
    parser.set_defaults(run=run_predict)


def output_names(paths: list[Path]) -> list[Path]:
    """Relative output names that keep two inputs with the same file name apart.

    Paths are taken relative to their deepest common folder, so ``a/x.png`` and ``b/x.png``
    become ``a/x.png`` and ``b/x.png`` rather than both ``x.png``.
    """
    resolved = [p.resolve() for p in paths]
    if not resolved:
        return []
    parents = [p.parent for p in resolved]
    common = Path(*_common_prefix([q.parts for q in parents]))
    return [p.relative_to(common) for p in resolved]


def _common_prefix(parts: list[tuple[str, ...]]) -> tuple[str, ...]:
    prefix = parts[0]
    for other in parts[1:]:
        length = 0
        while length < min(len(prefix), len(other)) and prefix[length] == other[length]:
            length += 1
        prefix = prefix[:length]
    return prefix


def run_predict(args: argparse.Namespace) -> None:
    import numpy as np

    from funad.data.images import discover_images
    from funad.model import FunAD
    from funad.reports.heatmaps import save_overlay

    overrides = {"device": args.device} if args.device else {}
    model = FunAD.load(args.model, **overrides)
    model.progress = not args.quiet
    paths = discover_images(args.images)
    names = dict(zip(paths, output_names(paths)))
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    count = 0
    with open(args.out / "scores.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "score"])
        for prediction in model.predict(paths):
            name = names[prediction.path]
            map_path = args.out / "maps" / name.with_suffix(".npy")
            map_path.parent.mkdir(parents=True, exist_ok=True)
            np.save(map_path, prediction.anomaly_map)
            save_overlay(prediction.path, prediction.anomaly_map, (args.out / "heatmaps" / name).with_suffix(".png"))
            writer.writerow([str(prediction.path), f"{prediction.score:.6g}"])
            count += 1
    logger.info("scored %d images in %.1f s; results in %s", count, time.perf_counter() - started, args.out)
