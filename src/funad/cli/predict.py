"""`funad predict MODEL IMAGES... --out OUT_DIR`: scores.csv (with labels), maps/*.npy, heatmaps/*.jpg.

MODEL is a directory written by `funad fit`, or a model.onnx written by `funad export`: the latter
is scored with onnxruntime and never imports torch, so a command scoring a few images starts in
about a second instead of several (torch's import alone took 2.7-3.5 s on a 2-core machine).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from funad.cli.distributed import add_distributed_options, distributed_run
from funad.cli.loading import add_device_option
from funad.utils.arguments import finite_float

if TYPE_CHECKING:
    from funad.model import FunAD
    from funad.runtime import OnnxModel

logger = logging.getLogger(__name__)

# Output threads: image encoding and fsync release the GIL, so they overlap the next batches' backbone.
WRITER_THREADS = 2


def register(subparsers) -> None:
    parser = subparsers.add_parser("predict", help="score and map images with a fitted model")
    parser.add_argument("model", type=Path, help="model directory written by `funad fit`, or model.onnx written by "
                                                  "`funad export` (scored with onnxruntime, without torch: quick to "
                                                  "start; CPU only)")
    parser.add_argument("images", nargs="+", help="image files and/or folders")
    parser.add_argument("--out", required=True, type=Path,
                        help="output folder: scores.csv, regions.csv, maps/, heatmaps/, prediction.json")
    add_device_option(parser)
    add_threshold_option(parser)
    parser.add_argument("--maps", choices=("npy", "png", "none"), default="npy",
                        help="anomaly maps as float32 .npy, as 16-bit .png scaled by the model's heatmap colour "
                             "range (recorded in prediction.json), or not at all (default npy)")
    parser.add_argument("--map-size", type=parse_map_size, default="original", metavar="original|input|WxH",
                        help="size of maps, heatmaps and region boxes: each image's own, the backbone's input "
                             "size, or WIDTHxHEIGHT pixels (default original)")
    parser.add_argument("--heatmaps", action=argparse.BooleanOptionalAction, default=True,
                        help="write heatmaps/ (the map over the image, defect regions outlined)")
    add_heatmap_format_option(parser)
    parser.add_argument("--report", action="store_true", help="also write report.html (see `funad report`)")
    earlier = parser.add_mutually_exclusive_group()  # what to do with an earlier prediction in OUT
    earlier.add_argument("--resume", action="store_true",
                         help="keep the images already scored in OUT (the same files) and score only the others; OUT "
                              "must have been written by the same model with the same settings, for inputs under the "
                              "same common folder")
    earlier.add_argument("--overwrite", action="store_true",
                         help="replace an earlier prediction in OUT (its files, maps and heatmaps; nothing else "
                              "there); without it or --resume such an OUT is refused")
    add_distributed_options(parser)
    parser.set_defaults(run=run_predict)


def add_threshold_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threshold", type=finite_float, default=None, metavar="VALUE",
                        help="an image with a score above VALUE is anomalous (default: the model's label-free "
                             "threshold)")


def add_heatmap_format_option(parser: argparse.ArgumentParser) -> None:
    # JPEG by default: a heatmap is a picture to look at (the exact values are in maps/), and a
    # lossless PNG of a photo cost 30x the CPU (73 vs 2.4 ms at 1 megapixel, more than the backbone
    # at 3) for 10x the bytes (docs/speed.md).
    parser.add_argument("--heatmap-format", choices=("jpg", "png"), default="jpg",
                        help="heatmaps as JPEG (quality 90) or as lossless PNG (30x slower to encode, 6-10x the "
                             "bytes; default jpg)")


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
    from funad.data.images import require_image_files
    from funad.reports.prediction_folder import (
        REGIONS,
        SCORES,
        check_no_earlier_prediction,
        check_some_image_read,
        image_key,
        input_folder,
        output_names,
        prediction_description,
        remove_earlier_prediction,
        resume_folder,
        write_description,
    )
    from funad.reports.prediction_writer import (
        MAX_PENDING,
        MAX_PENDING_BYTES,
        ImageOutputs,
        PredictionWriter,
        held_bytes,
    )
    from funad.utils import distributed

    _check_model(args.model)  # before the images: MODEL and IMAGES given the other way round end here
    paths = require_image_files(args.images)
    if not args.resume:  # refused before the model's minutes of loading, removed only once it has loaded
        check_no_earlier_prediction(args.out, overwrite=args.overwrite)
    model, digest = _load(args.model, args.device)
    model.progress = not args.quiet and distributed.is_main()
    args.out.mkdir(parents=True, exist_ok=True)
    threshold = model.threshold_ if args.threshold is None else args.threshold
    colour_range = model.heatmap_range()
    names = dict(zip(paths, output_names(paths)))  # over every image, so that every rank names alike
    description = prediction_description(
        args.model, digest, threshold, "model" if args.threshold is None else "--threshold",
        pixel_threshold=model.pixel_threshold_, maps=args.maps, map_range=list(colour_range), map_size=args.map_size,
        heatmaps=args.heatmap_format if args.heatmaps else "none", input_folder=input_folder(paths[0], names[paths[0]]))
    done: set[str] = set()
    if distributed.is_main():  # one process checks (and repairs) OUT; the others learn what it found
        if args.resume:
            done = resume_folder(args.out, description)
        else:
            remove_earlier_prediction(args.out)
        write_description(args.out, description)
    done = distributed.broadcast_object(done)
    mine = distributed.block(len(paths))
    # Matched by the files themselves only when resuming: a link's target is a system call per image.
    already = [image_key(path) in done for path in paths] if done else [False] * len(paths)
    todo = [path for path, skip in zip(paths[mine.start:mine.stop], already[mine.start:mine.stop]) if not skip]
    finished = sum(already)
    if done and distributed.is_main():
        logger.info("resuming: %d of %d images are already in %s", finished, len(paths), args.out)
    part = args.out if distributed.world_size() == 1 else _part_folder(args.out, distributed.rank())
    part.mkdir(exist_ok=True)
    outputs = ImageOutputs(model, args.out, names, threshold, colour_range,
                           args.maps, "." + args.heatmap_format if args.heatmaps else None)
    started = time.perf_counter()
    # A rank's part starts anew; rank 0 appends the parts to OUT's files when resuming.
    writer = PredictionWriter(part, append=args.resume and part == args.out, threads=WRITER_THREADS,
                              max_pending=MAX_PENDING, max_pending_bytes=MAX_PENDING_BYTES)
    try:
        with writer:
            # The heatmaps draw on the images predict decoded: a second decode cost as much as the PNG encoding.
            for path, prediction in zip(todo, model.predict(todo, map_size=args.map_size, keep_images=args.heatmaps)):
                writer.submit(partial(outputs, path, prediction), held_bytes(prediction))
    except KeyboardInterrupt:
        logger.error("interrupted; the %d images finished are in %s: rerun the same command with --resume to "
                     "score the others", finished + writer.written + writer.failed, part)
        raise SystemExit(130) from None
    count, anomalous, failed = writer.written, writer.anomalous, writer.failed
    if distributed.world_size() > 1:
        logger.info("rank=%d world_size=%d images=%d", distributed.rank(), distributed.world_size(), len(todo))
        # The totals of every rank, which also waits until every rank's part is complete.
        count, anomalous, failed = map(sum, zip(*distributed.gather_objects((count, anomalous, failed))))
        if not distributed.is_main():
            return
        _join_parts(args.out, distributed.world_size(), (SCORES, REGIONS), append=args.resume)
    check_some_image_read(count + finished, failed, args.out / SCORES)
    logger.info("scored %d images in %.2f s (%d above the threshold %.6g); results in %s",
                count, time.perf_counter() - started, anomalous, threshold, args.out)
    if failed:
        logger.warning("%d of the images could not be read: see the error column of %s", failed, args.out / SCORES)
    if args.report:
        from funad.reports.html import write_report

        logger.info("report: %s", write_report(args.out))


def _is_exported(model: Path) -> bool:
    """Whether MODEL names an exported ``.onnx`` file rather than a `funad fit` directory."""
    return model.suffix == ".onnx" and not model.is_dir()


def _check_model(model: Path) -> None:
    """Raise unless ``model`` is an exported ``.onnx`` file or holds a `funad fit` model's files; cheap, unlike
    loading it."""
    if _is_exported(model):
        if not model.is_file():
            raise FileNotFoundError(f"no such model file: {model}")
        return
    from funad.persistence import check_model_directory

    try:
        check_model_directory(model)
    except ValueError as error:
        raise ValueError(f"{error}; `funad predict` takes the model first: MODEL IMAGES... --out OUT") from None


def _load(model: Path, device: str | None) -> tuple[FunAD | OnnxModel, str]:
    """The model at ``model`` (a `funad fit` directory or an exported ``.onnx`` file) and what identifies it."""
    if _is_exported(model):
        from funad.runtime import OnnxModel
        from funad.utils import distributed
        from funad.utils.files import file_digest

        if device not in (None, "auto", "cpu"):
            raise ValueError(f"{model}: an exported ONNX model runs on the CPU here; for --device {device} "
                             "predict with the model directory written by `funad fit`")
        if distributed.launched():
            raise ValueError(f"{model}: torchrun predict needs the model directory written by `funad fit`")
        return OnnxModel(model), file_digest(model)
    from funad.cli.loading import load_model_directory
    from funad.persistence import model_digest

    return load_model_directory(model, device), model_digest(model)


def _part_folder(out: Path, rank: int) -> Path:
    return out / f".rank-{rank}"


def _join_parts(out: Path, world_size: int, names: tuple[str, ...], append: bool) -> None:
    """Each CSV file of the ranks' parts as one file in ``out`` (added to its rows with ``append``), the
    ranks' rows in rank order (the images' order), one header; then the parts are removed."""
    for name in names:
        with open(out / name, "a" if append else "w", newline="") as joined:
            for rank in range(world_size):
                with open(_part_folder(out, rank) / name, newline="") as part:
                    header = part.readline()
                    if joined.tell() == 0:
                        joined.write(header)
                    shutil.copyfileobj(part, joined)
    for rank in range(world_size):
        shutil.rmtree(_part_folder(out, rank))
