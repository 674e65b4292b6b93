"""``python -m funad.runtime MODEL.onnx IMAGES... --out DIR``: scores.csv and maps as ``funad predict`` writes them.

For a deployment with onnxruntime, numpy and pillow only: without heatmaps, regions or
prediction.json (matplotlib, scipy); the rows of scores.csv and the ``.npy`` maps (at each image's
size) are those ``funad predict --no-heatmaps`` writes for the same images. ``funad predict
MODEL.onnx`` writes every output of ``funad predict``, also without torch.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from functools import partial
from pathlib import Path

from funad.data.images import require_image_files
from funad.reports.prediction_folder import (
    SCORES,
    check_no_earlier_prediction,
    check_some_image_read,
    output_names,
    remove_earlier_prediction,
)
from funad.reports.prediction_writer import MAX_PENDING, MAX_PENDING_BYTES, ImageOutputs, PredictionWriter, held_bytes
from funad.runtime import BATCH_SIZE, OnnxModel
from funad.utils.arguments import positive_int
from funad.utils.files import error_message

logger = logging.getLogger("funad.runtime")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m funad.runtime",
                                     description="Score images with an ONNX model from `funad export`.")
    parser.add_argument("model", type=Path, help="model.onnx written by `funad export --format onnx`")
    parser.add_argument("images", nargs="+", help="image files and/or folders")
    parser.add_argument("--out", required=True, type=Path, help="output folder: scores.csv and maps/")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier prediction in OUT (its files and maps; nothing else there)")
    parser.add_argument("--maps", choices=("npy", "none"), default="npy",
                        help="anomaly maps at each image's size as float32 .npy, or none (default npy)")
    parser.add_argument("--batch-size", type=positive_int, default=BATCH_SIZE,
                        help=f"images per ONNX run (default {BATCH_SIZE})")
    return parser


def run(args: argparse.Namespace, paths: list[Path]) -> None:
    check_no_earlier_prediction(args.out, overwrite=args.overwrite, resumable=False)
    model = OnnxModel(args.model)
    names = dict(zip(paths, output_names(paths)))
    remove_earlier_prediction(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    # predict's outputs and writer: each row flushed once its map is on disk, so a killed run keeps what it finished.
    outputs = ImageOutputs(model, args.out, names, model.threshold_, (0.0, 1.0),  # the range scales PNG maps only
                           args.maps, None, regions=False)
    with PredictionWriter(args.out, append=False, threads=1, max_pending=MAX_PENDING,
                          max_pending_bytes=MAX_PENDING_BYTES, regions=False) as writer:
        for path, prediction in zip(paths, model.predict(paths, batch_size=args.batch_size)):
            writer.submit(partial(outputs, path, prediction), held_bytes(prediction))
    check_some_image_read(writer.written, writer.failed, args.out / SCORES)
    logger.info("scored %d images in %.2f s (%d could not be read); results in %s", writer.written,
                time.perf_counter() - started, writer.failed, args.out)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        run(args, require_image_files(args.images))
    except (ValueError, OSError) as error:  # FileNotFoundError, FileExistsError among them
        logger.error("%s", error_message(error))
        return getattr(error, "exit_code", 1)  # 2 for inputs holding no image (NoImageFilesError), as predict's
    return 0


if __name__ == "__main__":
    sys.exit(main())
