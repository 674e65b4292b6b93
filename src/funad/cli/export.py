"""`funad export MODEL_DIR --format onnx --out model.onnx`: the fitted model as one graph (:mod:`funad.export.onnx`)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from funad.cli.loading import add_model_argument

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    parser = subparsers.add_parser("export", help="export a fitted model (backbone, scorer, maps, threshold) to "
                                   "ONNX, to run with `python -m funad.runtime`")
    add_model_argument(parser)
    parser.add_argument("--format", choices=("onnx",), default="onnx", help="the one format so far: onnx")
    parser.add_argument("--out", required=True, type=Path, help="file to write, e.g. model.onnx")
    parser.add_argument("--overwrite", action="store_true", help="replace the file --out if it exists")
    parser.set_defaults(run=run_export)


def run_export(args: argparse.Namespace) -> None:
    from funad.cli.loading import load_model_directory
    from funad.export.onnx import export_onnx
    from funad.utils.files import refuse_existing_output

    refuse_existing_output(args.out, overwrite=args.overwrite)
    path = export_onnx(load_model_directory(args.model, "cpu"), args.out)
    logger.info("wrote %s (%.1f MB); run it with: python -m funad.runtime %s IMAGES... --out DIR",
                path, path.stat().st_size / 1e6, path)
