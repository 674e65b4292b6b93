"""`funad fit IMAGES... --out MODEL_DIR`: train on an unlabelled folder."""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from pathlib import Path
from typing import Literal

from funad.cli.dataclass_options import add_dataclass_options, dataclass_overrides
from funad.cli.distributed import add_distributed_options, distributed_run
from funad.config import FunADConfig

logger = logging.getLogger(__name__)


# The registries' names, listed here because importing a registry imports torch and timm: with
# these, `funad --help` and the parsing of any command import neither (tests/test_cli_options.py
# checks that they equal the registries). Literal fields (level, bank_rebuild) list their own.
CONFIG_CHOICES = {
    "backbone": ("dino_vitb8", "dinov2_vitb14", "dinov2_vits14", "efficientnet_lite0", "imgfocus_dinov2_vits14",
                 "wide_resnet50_2"),
    "scorer": ("blend", "knn", "local_net", "patchcore", "softpatch"),
}


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """A flag for every FunADConfig field, absent from the parsed arguments unless given."""
    add_dataclass_options(parser, FunADConfig, CONFIG_CHOICES)


def config_overrides(args: argparse.Namespace) -> dict:
    return dataclass_overrides(args, FunADConfig)


def add_cache_options(parser: argparse.ArgumentParser) -> None:
    """Where the commands that extract features keep them (:func:`cache_dir_of` reads the choice)."""
    parser.add_argument("--cache-dir", type=Path, default=None, help="feature cache (default ~/.cache/funad/features)")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")


def cache_dir_of(args: argparse.Namespace) -> Path | Literal[False] | None:
    """``FunAD``'s ``cache_dir``: False without a cache, None for the default folder."""
    return False if args.no_cache else args.cache_dir


def register(subparsers) -> None:
    parser = subparsers.add_parser("fit", help="train on an unlabelled folder of images")
    parser.add_argument("images", nargs="+", help="image files and/or folders (searched recursively)")
    parser.add_argument("--out", required=True, type=Path, help="model directory to write")
    parser.add_argument("--strict", action="store_true", help="fail on the first unreadable image instead of skipping")
    add_cache_options(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace the model directory --out if it exists")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run from its checkpoint in OUT.partial/ (same command otherwise)")
    add_distributed_options(parser)
    add_config_options(parser)
    parser.set_defaults(run=run_fit)


def run_folder(model_dir: Path) -> Path:
    """Where a run keeps its work until the model is saved: a sibling of the model directory,
    so the atomic replacement of the model directory never touches it."""
    return model_dir.with_name(model_dir.name + ".partial")


def _what_is_kept(checkpoint, model) -> str:
    """What an interrupted fit leaves for the next run: finished epochs, or only extracted features."""
    if checkpoint.has_checkpoint():
        return f"finished epochs are kept in {checkpoint.folder}: rerun the same command with --resume"
    cache = model.feature_cache_folder()
    if cache is None:
        return "no epoch had finished and features are not cached (--no-cache): a rerun starts from the beginning"
    return (f"no epoch had finished; features extracted so far are kept in the feature cache {cache}, "
            "so a rerun skips them")


def run_fit(args: argparse.Namespace) -> None:
    with distributed_run(args):
        _fit(args)


def _fit(args: argparse.Namespace) -> None:
    from funad.data.images import require_image_files, write_skipped_csv
    from funad.method.checkpoint import TrainingCheckpoint
    from funad.model import FunAD
    from funad.utils import distributed
    from funad.utils.files import refuse_existing_output

    refuse_existing_output(args.out, overwrite=args.overwrite)
    require_image_files(args.images)  # a usage error, as predict's; the model finds them again while it reads them
    model = FunAD(cache_dir=cache_dir_of(args), progress=not args.quiet and distributed.is_main(),
                  **config_overrides(args))
    started = time.perf_counter()
    work = run_folder(args.out.resolve())
    checkpoint = TrainingCheckpoint(work / "checkpoint", resume=args.resume)
    try:
        model.fit(args.images, strict=args.strict, checkpoint=checkpoint)
    except KeyboardInterrupt:
        logger.error("interrupted; %s", _what_is_kept(checkpoint, model))
        raise SystemExit(130) from None
    if not distributed.is_main():  # rank 0 writes the model
        return
    directory = model.save(args.out, overwrite=args.overwrite)  # refused above unless --overwrite
    if model.skipped_:
        write_skipped_csv(model.skipped_, directory / "skipped.csv")
    shutil.rmtree(work, ignore_errors=True)
    logger.info("fitted on %d images in %.1f s (%d skipped); model written to %s",
                len(model.train_paths_), time.perf_counter() - started, len(model.skipped_), directory)
