"""`funad predict MODEL_DIR IMAGES... --out OUT_DIR`: scores.csv (with labels), maps/*.npy, heatmaps/*.png."""

from __future__ import annotations

import argparse
import csv
import logging
import shutil
import time
from pathlib import Path

from funad.cli.distributed import add_distributed_options, distributed_run

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
    parser.add_argument("--maps", choices=("npy", "png", "none"), default="npy",
                        help="anomaly maps as float32 .npy, as 16-bit .png scaled by the model's heatmap colour "
                             "range (recorded in prediction.json), or not at all (default npy)")
    parser.add_argument("--map-size", type=parse_map_size, default="original", metavar="original|input|WxH",
                        help="size of maps, heatmaps and region boxes: each image's own, the backbone's input "
                             "size, or WIDTHxHEIGHT pixels (default original)")
    parser.add_argument("--heatmaps", action=argparse.BooleanOptionalAction, default=True,
                        help="write heatmaps/ (the map over the image, defect regions outlined)")
    parser.add_argument("--report", action="store_true", help="also write report.html (see `funad report`)")
    add_distributed_options(parser)
    parser.set_defaults(run=run_predict)


def parse_map_size(text: str) -> str | tuple[int, int]:
    """``original``, ``input`` or ``WxH`` -> what ``FunAD.predict(map_size=...)`` takes ((height, width))."""
    if text in ("original", "input"):
        return text
    width, separator, height = text.lower().partition("x")
    if separator and width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0:
        return int(height), int(width)
    raise argparse.ArgumentTypeError(f"{text!r} is not original, input or WIDTHxHEIGHT (e.g. 640x480)")


def run_predict(args: argparse.Namespace) -> None:
    with distributed_run(args):
        _predict(args)


def _predict(args: argparse.Namespace) -> None:
    """Under torchrun each rank scores its block of the images, writing their maps and heatmaps and its
    part of the CSV files, which rank 0 then joins (OUT must be one folder for all ranks)."""
    from funad.cli.errors import NoInputImagesError
    from funad.data.images import IMAGE_EXTENSIONS, discover_images, load_image
    from funad.model import FunAD
    from funad.reports.heatmaps import save_overlay
    from funad.reports.prediction_folder import (
        COLUMNS,
        REGION_COLUMNS,
        REGIONS,
        SCORES,
        label_name,
        output_file,
        output_names,
        write_description,
        write_map,
    )
    from funad.utils import distributed

    paths = discover_images(args.images)
    if not paths:
        raise NoInputImagesError(f"no image files in {', '.join(args.images)} (folders are searched recursively "
                                 f"for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    overrides = {"device": args.device} if args.device else {}
    model = FunAD.load(args.model, **overrides)
    model.progress = not args.quiet and distributed.is_main()
    names = dict(zip(paths, output_names(paths)))
    mine = distributed.block(len(paths))
    paths = paths[mine.start:mine.stop]
    args.out.mkdir(parents=True, exist_ok=True)
    part = args.out if distributed.world_size() == 1 else _part_folder(args.out, distributed.rank())
    part.mkdir(exist_ok=True)
    threshold = model.threshold_ if args.threshold is None else args.threshold
    colour_range = model.heatmap_range()
    if distributed.is_main():
        write_description(args.out, args.model, threshold, "model" if args.threshold is None else "--threshold",
                          pixel_threshold=model.pixel_threshold_, maps=args.maps, map_range=list(colour_range),
                          map_size=args.map_size)
    started = time.perf_counter()
    count = anomalous = failed = 0
    with (open(part / SCORES, "w", newline="") as scores_file,
          open(part / REGIONS, "w", newline="") as regions_file):
        writer, region_writer = csv.writer(scores_file), csv.writer(regions_file)
        writer.writerow(COLUMNS)
        region_writer.writerow(REGION_COLUMNS)
        for path, prediction in zip(paths, model.predict(paths, map_size=args.map_size)):
            if prediction.anomaly_map is None:  # unreadable: a row that says why, no map
                writer.writerow([str(path), "nan", "", f"{threshold:.9g}", "", "", prediction.error])
                failed += 1
                continue
            is_anomalous = bool(model.label(prediction.score, threshold))
            mask = None
            if is_anomalous:
                mask, regions = model.defect_regions(prediction.anomaly_map)
                region_writer.writerows([str(path), number, region.x, region.y, region.width, region.height,
                                         region.area, f"{region.peak:.6g}"]
                                        for number, region in enumerate(regions, start=1))
            map_name = heatmap_name = ""
            if args.maps != "none":
                map_name = output_file("maps", names[path], "." + args.maps).as_posix()
                write_map(args.out / map_name, prediction.anomaly_map, colour_range)
            if args.heatmaps:
                heatmap_name = output_file("heatmaps", names[path], ".png").as_posix()
                save_overlay(load_image(path), prediction.anomaly_map, args.out / heatmap_name, colour_range, mask)
            writer.writerow([str(path), f"{prediction.score:.6g}", label_name(is_anomalous),
                             f"{threshold:.9g}", heatmap_name, map_name, ""])
            count += 1
            anomalous += is_anomalous
    if distributed.world_size() > 1:
        logger.info("rank=%d world_size=%d images=%d", distributed.rank(), distributed.world_size(), len(paths))
        # The totals of every rank, which also waits until every rank's part is complete.
        count, anomalous, failed = map(sum, zip(*distributed.gather_objects((count, anomalous, failed))))
        if not distributed.is_main():
            return
        _join_parts(args.out, distributed.world_size(), (SCORES, REGIONS))
    logger.info("scored %d images in %.1f s (%d above the threshold %.6g); results in %s",
                count, time.perf_counter() - started, anomalous, threshold, args.out)
    if failed:
        logger.warning("%d images could not be read: see the error column of %s", failed, args.out / SCORES)
    if args.report:
        from funad.reports.html import write_report

        logger.info("report: %s", write_report(args.out))


def _part_folder(out: Path, rank: int) -> Path:
    return out / f".rank-{rank}"


def _join_parts(out: Path, world_size: int, names: tuple[str, ...]) -> None:
    """Each CSV file of the ranks' parts as one file in ``out``, the ranks' rows in rank order (the
    images' order), one header; then the parts are removed."""
    for name in names:
        with open(out / name, "w", newline="") as joined:
            for rank in range(world_size):
                with open(_part_folder(out, rank) / name, newline="") as part:
                    header = part.readline()
                    if rank == 0:
                        joined.write(header)
                    shutil.copyfileobj(part, joined)
    for rank in range(world_size):
        shutil.rmtree(_part_folder(out, rank))
