"""`funad benchmark DATA_ROOT --category C --contamination 0.1 --seeds 0 1 2 --out DIR`: the
contaminated-data protocol with FUN-AD, FUN-AD*, PatchCore and SoftPatch side by side."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from funad.cli.fit import add_config_options, config_overrides

logger = logging.getLogger(__name__)

_SETTINGS = {"both": ("no-overlap", "overlap"), "no-overlap": ("no-overlap",), "overlap": ("overlap",)}


def register(subparsers) -> None:
    parser = subparsers.add_parser("benchmark", help="contaminated-data protocol: FUN-AD and baselines on one split")
    parser.add_argument("data_root", type=Path, nargs="?", help="MVTec AD, VisA or normal/abnormal folder dataset")
    parser.add_argument("--category", default=None, help="category (MVTec AD folder, VisA object)")
    parser.add_argument("--normal-dir", type=Path, help="generic layout: folder of normal images")
    parser.add_argument("--abnormal-dir", type=Path, help="generic layout: folder of anomalous images")
    parser.add_argument("--mask-dir", type=Path, help="generic layout: masks named like the anomalous images")
    ratios = parser.add_mutually_exclusive_group()
    ratios.add_argument("--contamination", type=float, default=0.1, help="share of normal training images added "
                        "as test anomalies (default 0.1)")
    ratios.add_argument("--sweep", type=float, nargs="+", help="several contamination ratios; also plots them")
    ratios.add_argument("--split", type=Path, nargs="+", help="reuse split files written by an earlier run")
    parser.add_argument("--setting", choices=tuple(_SETTINGS), default="both")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--methods", nargs="+", default=None, help="default: funad funad* patchcore softpatch")
    parser.add_argument("--funad-star-ratio", type=float, default=0.05, help="FUN-AD*'s synthetic anomaly ratio")
    parser.add_argument("--coreset-fraction", type=float, default=0.1, help="PatchCore/SoftPatch coreset share")
    parser.add_argument("--softpatch-noise", type=float, default=0.15, help="SoftPatch's dropped share per position")
    parser.add_argument("--patchcore-reweight", action="store_true", help="PatchCore's image-score reweighting")
    parser.add_argument("--out", required=True, type=Path, help="results folder")
    parser.add_argument("--cache-dir", type=Path, default=None, help="feature cache (default ~/.cache/funad/features)")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    add_config_options(parser)
    parser.set_defaults(run=run_benchmark_command)


def _dataset(args: argparse.Namespace):
    from funad.benchmark.datasets import load_dataset, load_folders

    if args.normal_dir or args.abnormal_dir:
        if not (args.normal_dir and args.abnormal_dir):
            raise ValueError("the generic layout needs both --normal-dir and --abnormal-dir")
        return load_folders(args.normal_dir, args.abnormal_dir, args.mask_dir, args.category or "folders")
    if args.data_root is None:
        raise ValueError("give DATA_ROOT, --normal-dir/--abnormal-dir, or --split FILE")
    return load_dataset(args.data_root, args.category)


def run_benchmark_command(args: argparse.Namespace) -> None:
    from funad.benchmark.plots import plot_sweep
    from funad.benchmark.protocol import load_split, make_split
    from funad.benchmark.runner import METHODS, BenchmarkOptions, format_table, run_benchmark
    from funad.utils.versions import package_versions

    methods = tuple(args.methods or METHODS)
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; choose from {', '.join(METHODS)}")
    if hasattr(args, "seed"):
        raise ValueError("funad benchmark seeds each run with its split's seed: use --seeds, not --seed")
    if args.split:
        splits = [load_split(path) for path in args.split]
        source: dict[str, Any] = {"splits": [str(p) for p in args.split]}
        pixels = any(sample.mask is not None for split in splits for sample in split.test)
    else:
        dataset = _dataset(args)
        ratios = args.sweep or [args.contamination]
        splits = [make_split(dataset, ratio, seed) for ratio in ratios for seed in args.seeds]
        source = {"root": str(args.data_root), "category": dataset.name, "layout": dataset.layout,
                  "num_train": len(dataset.train), "num_test": len(dataset.test)}
        pixels = dataset.has_masks
        if not pixels:
            logger.warning("%s has no ground-truth masks: image metrics only", dataset.name)
    split_files = [str(split.save(args.out / "splits")) for split in splits]

    options = BenchmarkOptions(methods=methods, settings=_SETTINGS[args.setting], funad_config=config_overrides(args),
                               funad_star_ratio=args.funad_star_ratio, coreset_fraction=args.coreset_fraction,
                               softpatch_noise=args.softpatch_noise, patchcore_reweight=args.patchcore_reweight,
                               cache_dir=False if args.no_cache else args.cache_dir, progress=not args.quiet)
    header = {
        "arguments": {name: value if isinstance(value, (int, float, bool, type(None))) else str(value)
                      for name, value in vars(args).items() if name != "run"},
        "dataset": source,
        "split_files": split_files,
        "options": {"methods": list(methods), "settings": list(options.settings), "funad_config": options.funad_config,
                    "funad_star_ratio": options.funad_star_ratio, "coreset_fraction": options.coreset_fraction,
                    "softpatch_noise": options.softpatch_noise, "patchcore_reweight": options.patchcore_reweight},
        "versions": package_versions(),
    }
    results_path = args.out / "results.json"
    def write_partial(partial: dict) -> None:
        _write_results(results_path, header, partial, False)

    outcome = run_benchmark(splits, options, pixels, on_split_done=write_partial)
    summary = _write_results(results_path, header, outcome, True)
    if len({split.ratio for split in splits}) > 1:
        plot_sweep(summary, args.out / "sweep.png", f"{splits[0].category}: contamination sweep")
    print(format_table(summary))
    logger.info("results written to %s", results_path)


def _write_results(path: Path, header: dict, outcome: dict, complete: bool) -> list[dict]:
    """results.json with every run so far (``complete`` false while splits remain); the summary."""
    from funad.benchmark.runner import summarise

    summary = summarise(outcome["runs"])
    results = {**header, "complete": complete, "extract_seconds": outcome["extract_seconds"],
               "num_images_extracted": outcome["num_images"], "runs": outcome["runs"], "summary": summary}
    path.write_text(json.dumps(results, indent=1))
    return summary
