"""The ``funad`` command: fit, predict, demo."""

from __future__ import annotations

import argparse
import csv
import logging
import sys
import time
from dataclasses import fields
from pathlib import Path

from funad.config import FunADConfig

logger = logging.getLogger("funad")

# Configuration fields exposed as --flags on `fit` (the rest keep their defaults).
_FIT_OPTIONS = (
    "backbone", "weights", "image_size", "level", "epochs", "batch_size", "learning_rate", "momentum",
    "tau_m", "bank_image_ratio", "tau_n", "tau_a", "lambda_ms", "patches_per_image", "bank_patch_fraction",
    "bank_rebuild", "scorer", "knn_patch_fraction", "map_sigma", "seed", "device", "num_workers",
)


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    defaults = FunADConfig()
    types = {f.name: f.type for f in fields(FunADConfig)}
    for name in _FIT_OPTIONS:
        default = getattr(defaults, name)
        kind = {"int": int, "float": float}.get(type(default).__name__, str)
        if "int | None" in str(types[name]):
            kind = _optional_int
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, default=argparse.SUPPRESS,
                            help=f"default: {default}")


def _optional_int(text: str) -> int | None:
    return None if text.lower() in ("none", "all") else int(text)


def _config_overrides(args: argparse.Namespace) -> dict:
    return {name: getattr(args, name) for name in _FIT_OPTIONS if hasattr(args, name)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="funad", description="Fully unsupervised visual anomaly detection (FUN-AD).")
    parser.add_argument("--quiet", action="store_true", help="no progress bars, warnings and errors only")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    fit = commands.add_parser("fit", help="train on an unlabelled folder of images")
    fit.add_argument("images", nargs="+", help="image files and/or folders (searched recursively)")
    fit.add_argument("--out", required=True, type=Path, help="model directory to write")
    fit.add_argument("--strict", action="store_true", help="fail on the first unreadable image instead of skipping")
    fit.add_argument("--cache-dir", type=Path, default=None, help="feature cache (default ~/.cache/funad/features)")
    fit.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    _add_config_options(fit)

    predict = commands.add_parser("predict", help="score and map images with a fitted model")
    predict.add_argument("model", type=Path, help="model directory written by `funad fit`")
    predict.add_argument("images", nargs="+", help="image files and/or folders")
    predict.add_argument("--out", required=True, type=Path)
    predict.add_argument("--device", default=None, help="auto | cpu | cuda")

    demo = commands.add_parser("demo", help="build a small contaminated dataset, fit, predict, print AUROC")
    demo.add_argument("--out", type=Path, default=Path("funad-demo"), help="working folder")
    demo.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    handler = {"fit": run_fit, "predict": run_predict, "demo": run_demo}[args.command]
    try:
        handler(args)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        logger.error("%s", error)
        return 1
    return 0


def run_fit(args: argparse.Namespace) -> None:
    from funad.data.images import write_skipped_csv
    from funad.model import FunAD

    cache_dir = False if args.no_cache else args.cache_dir
    model = FunAD(cache_dir=cache_dir, progress=not args.quiet, **_config_overrides(args))
    started = time.perf_counter()
    model.fit(args.images, strict=args.strict)
    directory = model.save(args.out)
    if model.skipped_:
        write_skipped_csv(model.skipped_, directory / "skipped.csv")
    logger.info("fitted on %d images in %.1f s (%d skipped); model written to %s",
                len(model.train_paths_), time.perf_counter() - started, len(model.skipped_), directory)


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


def run_demo(args: argparse.Namespace) -> None:
    from funad.demo import run_demo as demo

    demo(args.out, seed=args.seed, progress=not args.quiet)


if __name__ == "__main__":
    sys.exit(main())
