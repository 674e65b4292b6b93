"""`funad benchmark DATASET... --category C... --contamination 0.1 --seeds 0 1 2 --out DIR`: the
contaminated-data protocol with FUN-AD, FUN-AD*, PatchCore and SoftPatch side by side, on one
dataset or several, with one summary table over them."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from funad.benchmark.options import METHODS, SETTINGS, BenchmarkOptions, PeerSettings
from funad.cli.dataclass_options import add_dataclass_options, dataclass_overrides
from funad.cli.fit import CONFIG_CHOICES, add_cache_options, cache_dir_of, config_overrides
from funad.config import FunADConfig
from funad.utils.arguments import UsageError, non_negative_int
from funad.utils.files import write_text_atomically

if TYPE_CHECKING:
    from funad.benchmark.datasets import Dataset
    from funad.benchmark.protocol import Split

logger = logging.getLogger(__name__)

_SETTINGS = {"both": SETTINGS, **{setting: (setting,) for setting in SETTINGS}}


def register(subparsers) -> None:
    parser = subparsers.add_parser("benchmark", help="contaminated-data protocol: FUN-AD and baselines, "
                                   "on one dataset or several side by side",
                                   allow_abbrev=False)  # --seed, which it does not take, would read as --seeds
    parser.add_argument("datasets", nargs="*", metavar="DATASET",
                        help="ROOT or ROOT:CATEGORY: an MVTec AD, VisA or normal/abnormal folder dataset")
    parser.add_argument("--category", nargs="+", action="extend", default=None,
                        help="categories (MVTec AD folder, VisA object), each read from every ROOT given "
                             "without :CATEGORY; after the datasets, as it takes every word up to the next option")
    parser.add_argument("--normal-dir", type=Path, help="generic layout: folder of normal images")
    parser.add_argument("--abnormal-dir", type=Path, help="generic layout: folder of anomalous images")
    parser.add_argument("--mask-dir", type=Path, help="generic layout: masks named like the anomalous images")
    ratios = parser.add_mutually_exclusive_group()
    ratios.add_argument("--contamination", type=float, default=0.1, help="share of normal training images added "
                        "as test anomalies (default 0.1)")
    ratios.add_argument("--sweep", type=float, nargs="+", help="several contamination ratios; also plots them")
    ratios.add_argument("--split", type=Path, nargs="+", help="reuse split files written by an earlier run")
    parser.add_argument("--setting", choices=tuple(_SETTINGS), default="both",
                        help="test sets: no-overlap leaves out the anomalies moved into the training set, overlap "
                             "keeps them (default both)")
    parser.add_argument("--seeds", type=non_negative_int, nargs="+", default=[0],
                        help="split seeds, one run of every method per seed (default 0)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=METHODS, metavar="METHOD",
                        help=f"of {' '.join(METHODS)} (default: all)")
    add_dataclass_options(parser, PeerSettings)
    parser.add_argument("--out", required=True, type=Path, help="results folder")
    add_cache_options(parser)
    # FunADConfig's flags less what the benchmark does not take: each run is seeded by its split's seed
    # (--seeds), and the runner evaluates anomaly maps, which need level patch.
    add_dataclass_options(parser, FunADConfig, {**CONFIG_CHOICES, "level": ("patch",)}, exclude={"seed"})
    parser.set_defaults(run=run_benchmark_command)


@dataclass
class _Job:
    """One dataset's splits, benchmarked from one feature extraction; ``name`` is its row label."""

    name: str
    splits: list[Split]
    pixels: bool
    source: dict[str, Any]


def _contaminated_job(name: str, dataset: Dataset, args: argparse.Namespace, **source: str) -> _Job:
    """Every (ratio, seed) split of ``dataset``; ``source`` says where it was read from."""
    from funad.benchmark.protocol import make_split

    splits = [make_split(dataset, ratio, seed) for ratio in args.sweep or [args.contamination] for seed in args.seeds]
    return _Job(name, splits, dataset.has_masks, {"name": name, **source, "category": dataset.name,
                                                  "layout": dataset.layout, "num_train": len(dataset.train),
                                                  "num_test": len(dataset.test)})


def _dataset_job(root: Path, category: str | None, args: argparse.Namespace) -> _Job:
    from funad.benchmark.datasets import load_dataset

    dataset = load_dataset(root, category)
    root_name = root.resolve().name
    # Names a category by its root too, so that two roots' categories of one name stay apart.
    name = f"{root_name}/{category}" if category and category != root_name else dataset.name
    return _contaminated_job(name, dataset, args, root=str(root))


def _folders_job(args: argparse.Namespace) -> _Job:
    from funad.benchmark.datasets import load_folders

    if not (args.normal_dir and args.abnormal_dir):
        raise UsageError("the generic layout needs both --normal-dir and --abnormal-dir")
    if args.datasets or len(args.category or []) > 1:
        raise UsageError("--normal-dir/--abnormal-dir is one dataset: no DATASET, at most one --category (its name)")
    name = args.category[0] if args.category else "folders"
    dataset = load_folders(args.normal_dir, args.abnormal_dir, args.mask_dir, name)
    return _contaminated_job(name, dataset, args, normal_dir=str(args.normal_dir), abnormal_dir=str(args.abnormal_dir))


def _split_jobs(paths: list[Path]) -> list[_Job]:
    """Split files grouped by the dataset (category) they were drawn from."""
    from funad.benchmark.protocol import load_split

    groups: dict[str, list] = {}
    for path in paths:
        split = load_split(path)
        groups.setdefault(split.category, []).append((path, split))
    return [_Job(name, [split for _, split in members],
                 any(sample.mask is not None for _, split in members for sample in split.test),
                 {"name": name, "splits": [str(path) for path, _ in members]})
            for name, members in groups.items()]


def _jobs(args: argparse.Namespace) -> list[_Job]:
    """Every dataset, read and split before any is benchmarked, so a mistake in the last fails at once."""
    from funad.benchmark.datasets import parse_dataset

    if args.split:
        jobs = _split_jobs(args.split)
    elif args.normal_dir or args.abnormal_dir:
        jobs = [_folders_job(args)]
    elif args.datasets:
        roots = [parse_dataset(text) for text in args.datasets]
        jobs = [_dataset_job(root, category, args) for root, explicit in roots
                for category in ([explicit] if explicit else args.category or [None])]
    else:
        raise UsageError("give DATASET..., --normal-dir/--abnormal-dir, or --split FILE")
    names = [job.name for job in jobs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"each dataset needs its own name in the table; given more than once: {', '.join(repeated)}")
    for job in jobs:
        if not job.pixels:
            logger.warning("%s has no ground-truth masks: image metrics only", job.name)
    return jobs


def run_benchmark_command(args: argparse.Namespace) -> None:
    from funad.benchmark.plots import plot_sweep
    from funad.benchmark.runner import run_benchmark
    from funad.utils.versions import package_versions

    methods = tuple(dict.fromkeys(args.methods))
    FunADConfig(**config_overrides(args))  # checks every setting before any split file is written
    jobs = _jobs(args)
    options = BenchmarkOptions(methods=methods, settings=_SETTINGS[args.setting], funad_config=config_overrides(args),
                               peers=PeerSettings(**dataclass_overrides(args, PeerSettings)),
                               cache_dir=cache_dir_of(args), progress=not args.quiet)
    header = {
        "arguments": {name: value if isinstance(value, (int, float, bool, type(None))) else str(value)
                      for name, value in vars(args).items() if name != "run"},
        "options": {"methods": list(methods), "settings": list(options.settings), "funad_config": options.funad_config,
                    **asdict(options.peers)},
        "versions": package_versions(),
    }
    # One dataset keeps the single-run layout (OUT/results.json); several get a folder each.
    folders = {job.name: args.out if len(jobs) == 1 else args.out / job.name for job in jobs}
    runs_by_dataset: dict[str, list[dict]] = {}
    for job in jobs:
        folder = folders[job.name]
        job_header = {**header, "dataset": job.source,
                      "split_files": [str(split.save(folder / "splits")) for split in job.splits]}

        def write_partial(partial: dict, job: _Job = job, job_header: dict = job_header) -> None:
            _write_results(folders[job.name] / "results.json", job_header, partial, False)
            runs_by_dataset[job.name] = partial["runs"]
            _write_summary(args.out, runs_by_dataset, folders, complete=False)

        outcome = run_benchmark(job.splits, options, job.pixels, on_split_done=write_partial)
        summary = _write_results(folder / "results.json", job_header, outcome, True)
        runs_by_dataset[job.name] = outcome["runs"]
        if len({split.ratio for split in job.splits}) > 1:
            plot_sweep(summary, folder / "sweep.png", f"{job.name}: contamination sweep")
    table = _write_summary(args.out, runs_by_dataset, folders, complete=True)
    print(table)
    logger.info("results written to %s (summary: %s)", args.out, args.out / "summary.md")


def _write_results(path: Path, header: dict, outcome: dict, complete: bool) -> list[dict]:
    """results.json with every run so far (``complete`` false while splits remain); the summary."""
    from funad.benchmark.summary import summarise

    summary = summarise(outcome["runs"])
    results = {**header, "complete": complete, "extract_seconds": outcome["extract_seconds"],
               "num_images_extracted": outcome["num_images"], "image_size": outcome["image_size"],
               "aspect": outcome["aspect"], "align": outcome["align"],
               "runs": outcome["runs"],
               "summary": summary}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, json.dumps(results, indent=1))  # rewritten after each split: never half a file
    return summary


def _write_summary(out: Path, runs_by_dataset: dict[str, list[dict]], folders: dict[str, Path],
                   complete: bool) -> str:
    """OUT/summary.json and OUT/summary.md over the datasets finished so far; the Markdown table."""
    from funad.benchmark.summary import format_table, summarise_datasets

    summary = summarise_datasets(runs_by_dataset)
    table = format_table(summary)
    results = {name: str(folder / "results.json") for name, folder in folders.items()}
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomically(out / "summary.json", json.dumps({"complete": complete, "results": results, **summary},
                                                           indent=1))
    write_text_atomically(out / "summary.md", table + "\n")
    return table
