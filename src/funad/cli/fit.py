"""`funad fit IMAGES... --out MODEL_DIR`: train on an unlabelled folder."""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from funad.config import FunADConfig

logger = logging.getLogger(__name__)

# Configuration fields exposed as --flags on `fit` (the rest keep their defaults).
_FIT_OPTIONS = (
    "backbone", "weights", "image_size", "level", "epochs", "batch_size", "learning_rate", "momentum",
    "tau_m", "bank_image_ratio", "tau_n", "tau_a", "lambda_ms", "patches_per_image", "bank_patch_fraction",
    "bank_rebuild", "bank_max_patches", "scorer", "knn_normal_share", "knn_patch_fraction", "map_sigma", "seed",
    "device", "num_workers",
    "synthetic_ratio",
)


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    defaults = FunADConfig()
    types = {f.name: f.type for f in fields(FunADConfig)}
    for name in _FIT_OPTIONS:
        default = getattr(defaults, name)
        kind: Callable[[str], Any] = {"int": int, "float": float}.get(type(default).__name__, str)
        if "int | None" in str(types[name]):
            kind = _optional_int
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, default=argparse.SUPPRESS,
                            help=f"default: {default}")


def _optional_int(text: str) -> int | None:
    return None if text.lower() in ("none", "all") else int(text)


def _config_overrides(args: argparse.Namespace) -> dict:
    return {name: getattr(args, name) for name in _FIT_OPTIONS if hasattr(args, name)}


def register(subparsers) -> None:
    parser = subparsers.add_parser("fit", help="train on an unlabelled folder of images")
    parser.add_argument("images", nargs="+", help="image files and/or folders (searched recursively)")
    parser.add_argument("--out", required=True, type=Path, help="model directory to write")
    parser.add_argument("--strict", action="store_true", help="fail on the first unreadable image instead of skipping")
    parser.add_argument("--cache-dir", type=Path, default=None, help="feature cache (default ~/.cache/funad/features)")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run from its checkpoint in OUT.partial/ (same command otherwise)")
    _add_config_options(parser)
    parser.set_defaults(run=run_fit)


def run_folder(model_dir: Path) -> Path:
    """Where a run keeps its work until the model is saved: a sibling of the model directory,
    so the atomic replacement of the model directory never touches it."""
    return model_dir.with_name(model_dir.name + ".partial")


def run_fit(args: argparse.Namespace) -> None:
    from funad.data.images import write_skipped_csv
    from funad.method.checkpoint import TrainingCheckpoint
    from funad.model import FunAD

    cache_dir = False if args.no_cache else args.cache_dir
    model = FunAD(cache_dir=cache_dir, progress=not args.quiet, **_config_overrides(args))
    started = time.perf_counter()
    work = run_folder(args.out.resolve())
    checkpoint = TrainingCheckpoint(work / "checkpoint", resume=args.resume)
    try:
        model.fit(args.images, strict=args.strict, checkpoint=checkpoint)
    except KeyboardInterrupt:
        logger.error("interrupted; finished epochs are kept in %s: rerun the same command with --resume", work)
        raise SystemExit(130) from None
    directory = model.save(args.out)
    if model.skipped_:
        write_skipped_csv(model.skipped_, directory / "skipped.csv")
    shutil.rmtree(work, ignore_errors=True)
    logger.info("fitted on %d images in %.1f s (%d skipped); model written to %s",
                len(model.train_paths_), time.perf_counter() - started, len(model.skipped_), directory)
