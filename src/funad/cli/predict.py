"""`funad predict MODEL_DIR IMAGES... --out OUT_DIR`: scores.csv (with labels), maps/*.npy, heatmaps/*.png."""

from __future__ import annotations

import argparse
import csv
import logging
import time
from pathlib import Path

from funad.utils.files import common_folder

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    parser = subparsers.add_parser("predict", help="score and map images with a fitted model")
    parser.add_argument("model", type=Path, help="model directory written by `funad fit`")
    parser.add_argument("images", nargs="+", help="image files and/or folders")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--device", default=None, help="auto | cpu | cuda")
    parser.add_argument("--threshold", type=float, default=None,
                        help="label images with a score above VALUE anomalous "
                             "(default: the model's label-free threshold)")
    parser.add_argument("--report", action="store_true", help="also write report.html (see `funad report`)")
    parser.set_defaults(run=run_predict)


def output_names(paths: list[Path]) -> list[Path]:
    """Relative output names that keep every input apart: the full file name, under its folders.

    Paths are taken relative to their deepest common folder, so ``a/x.png`` and ``b/x.png``
    stay ``a/x.png`` and ``b/x.png``; the suffix stays in the name, so ``x.png`` and ``x.jpg``
    stay apart too (``maps/x.png.npy``, ``maps/x.jpg.npy``).
    """
    resolved = [p.resolve() for p in paths]
    if not resolved:
        return []
    common = common_folder(resolved)
    return [p.relative_to(common) for p in resolved]


def output_file(folder: str, name: Path, suffix: str) -> Path:
    """``folder/<name><suffix>``: the suffix is added to the full name (``part.png`` -> ``part.png.npy``)."""
    return Path(folder) / name.with_name(name.name + suffix)


def run_predict(args: argparse.Namespace) -> None:
    import numpy as np

    from funad.cli.errors import NoInputImagesError
    from funad.data.images import IMAGE_EXTENSIONS, discover_images
    from funad.model import FunAD
    from funad.reports.heatmaps import save_overlay
    from funad.reports.prediction_folder import COLUMNS, SCORES, label_name, write_description

    paths = discover_images(args.images)
    if not paths:
        raise NoInputImagesError(f"no image files in {', '.join(args.images)} (folders are searched recursively "
                                 f"for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    overrides = {"device": args.device} if args.device else {}
    model = FunAD.load(args.model, **overrides)
    model.progress = not args.quiet
    names = dict(zip(paths, output_names(paths)))
    args.out.mkdir(parents=True, exist_ok=True)
    threshold = model.threshold_ if args.threshold is None else args.threshold
    write_description(args.out, args.model, threshold, "model" if args.threshold is None else "--threshold")
    started = time.perf_counter()
    count = anomalous = failed = 0
    with open(args.out / SCORES, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for path, prediction in zip(paths, model.predict(paths)):
            if prediction.anomaly_map is None:  # unreadable: a row that says why, no map
                writer.writerow([str(path), "nan", "", f"{threshold:.9g}", "", "", prediction.error])
                failed += 1
                continue
            name = names[path]
            map_name = output_file("maps", name, ".npy")
            heatmap_name = output_file("heatmaps", name, ".png")
            (args.out / map_name).parent.mkdir(parents=True, exist_ok=True)
            np.save(args.out / map_name, prediction.anomaly_map)
            save_overlay(path, prediction.anomaly_map, args.out / heatmap_name, model.heatmap_range())
            is_anomalous = bool(model.label(prediction.score, threshold))
            writer.writerow([str(path), f"{prediction.score:.6g}", label_name(is_anomalous),
                             f"{threshold:.9g}", heatmap_name.as_posix(), map_name.as_posix(), ""])
            count += 1
            anomalous += is_anomalous
    logger.info("scored %d images in %.1f s (%d above the threshold %.6g); results in %s",
                count, time.perf_counter() - started, anomalous, threshold, args.out)
    if failed:
        logger.warning("%d images could not be read: see the error column of %s", failed, args.out / SCORES)
    if args.report:
        from funad.reports.html import write_report

        logger.info("report: %s", write_report(args.out))
