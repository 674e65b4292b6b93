"""What a FUN-AD fit and predict cost, as ratios measured in one run (issue "Speed").

Reads one MVTec AD category in place (``--data``; nothing is copied): training set = all of
``train/good`` plus 10 % as many anomalous test images (bottle: 209 + 20 = 229), the default
configuration. Prints:

1. fit: wall time split into feature extraction (fresh temporary feature cache), training per
   epoch, and what follows training (final bank and threshold); peak RSS of this process and
   of the DataLoader workers;
2. the faithful schedule (every patch, the whole bank, no cap, rebuilt every iteration): a few
   iterations timed on the same features, extrapolated to an epoch, as a multiple of a default epoch;
3. predict throughput on the held-out test images against the bare backbone (same images, batch
   size and DataLoader, only the features computed) and against a PatchCore-style scorer (a
   10 % random patch bank of all training images, exact faiss search, same map code), for each
   ``--workers`` setting; best of ``--repeats`` passes, methods interleaved so drift hits all alike;
4. training cost of one epoch on synthetic fp16 features (memory-mapped through the feature
   cache) at ``--growth`` sizes, per image relative to the smallest size (1.0 = linear);
5. start-up: ``funad --help``, ``funad --version``, ``import funad.cli`` and a one-image ``funad
   predict`` of the fitted model (its directory, and the ``model.onnx`` that ``funad export`` writes
   of it), each a fresh process: median wall time, CPU time and peak RSS of ``--repeats`` runs;
6. the command line against the bare backbone: ``funad predict`` (default outputs, or each of
   ``--cli-variants``; of the model directory and of model.onnx) of every test image and of the
   first ``--cli-few``, each a fresh process, so that the marginal throughput (N - n) / (t_N - t_n)
   leaves start-up out; the bare backbone (decode, resize, forward, batches of the configured size,
   this process) on the same N images, the three back to back in each of ``--repeats`` rounds; the
   ratio is printed twice: from the fastest round of each of the three (the commands' times from
   the scoring seconds they log, "scored N images in S s", which leave their start-up out), and as
   the median of the rounds' own ratios of whole-process times, with each round's. On a shared
   machine a round's ratio swung from 0.35 to 1.19 (other work slows one side and not the other);
   the fastest runs are the least disturbed ones.
   ``--cli-image-size N``: the test images scaled to N x N pixels first (bicubic, plus Gaussian
   noise of 3 grey levels, as a camera's; written to the temporary folder), so that the outputs'
   cost at a factory camera's resolution shows (MVTec AD's own photos are 700-1024 px; the dev copy
   of bottle is 256 px).

On a shared machine absolute times inflate with the load (printed); the ratios are the figures::

    PYTHONPATH=src python benchmarks/speed.py --data ../shared/data/mvtec/bottle

Any ``funad fit`` setting can be given (``--backbone``, ``--epochs``, ...); the commands of parts 5
and 6 run this Python on the ``funad`` it imports (``PYTHONPATH`` is passed on).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import itertools
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from funad.benchmark.datasets import load_mvtec
from funad.benchmark.protocol import make_split
from funad.cli.fit import add_config_options, config_overrides
from funad.config import FunADConfig
from funad.features.cache import FeatureCache
from funad.features.containers import MethodFeatures
from funad.features.extraction import iterate_features, resolve_device
from funad.inference.scorers.knn import NearestNeighbourScorer
from funad.method.trainer import Trainer, make_state
from funad.model import LOAD_OVERRIDES, FunAD

FAITHFUL = dict(patches_per_image=None, bank_patch_fraction=1.0, bank_rebuild="iteration", bank_max_patches=None)


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def peak_rss_mb() -> tuple[float, float]:
    """Peak resident memory of this process and of its largest finished child (DataLoader workers), MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, children


def cpu_seconds() -> float:
    """CPU time of this process and its finished children: less inflated by a busy machine than wall time."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def split_paths(folder: Path, seed: int) -> tuple[list[Path], list[Path]]:
    """(training images: train/good + 10 % anomalies from the test set, the other test images), as the
    contaminated-data protocol splits the category; the held-out normals first, as they were measured."""
    split = make_split(load_mvtec(folder), 0.1, seed)
    held_out = sorted(split.test_set("no-overlap"), key=lambda sample: sample.label)
    return split.train, [sample.path for sample in held_out]


def benchmark_fit(model: FunAD, paths: list[Path]) -> tuple[FunAD, MethodFeatures, float]:
    """Fit with timing of each phase; returns the model, its training features and one epoch's seconds."""
    started, cpu_started = time.perf_counter(), cpu_seconds()
    features = model.extract(paths, description="extracting")
    extraction, extraction_cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
    epoch_ends = []
    training_started = time.perf_counter()
    model.fit_features(features, on_epoch_end=lambda state: epoch_ends.append(time.perf_counter()))
    finished = time.perf_counter()
    epochs = np.diff([training_started] + epoch_ends)
    after_training = finished - epoch_ends[-1]
    total = finished - started
    own, workers = peak_rss_mb()
    print(f"\n## fit ({len(paths)} images, {len(epochs)} epochs)   load average {load_average()}")
    print(f"total {total:.1f} s = extraction {extraction:.1f} s ({extraction / total:.0%}) + training "
          f"{epochs.sum():.1f} s ({epochs.sum() / total:.0%}; {epochs.mean():.2f} s/epoch, min {epochs.min():.2f}) "
          f"+ final bank and threshold {after_training:.1f} s ({after_training / total:.0%})")
    print(f"CPU time {cpu_seconds() - cpu_started:.0f} s (extraction {extraction_cpu:.0f} s) over "
          f"{os.cpu_count()} cores; "
          f"peak RSS: this process {own:.0f} MB, largest DataLoader worker {workers:.0f} MB")
    return model, features.method_features(model.config.level), float(np.median(epochs))


def benchmark_faithful(config: FunADConfig, features: MethodFeatures, default_epoch: float, iterations: int) -> None:
    """A few iterations of the faithful schedule, extrapolated to one epoch."""
    faithful = dataclasses.replace(config, **FAITHFUL)
    trainer = Trainer(faithful, features, resolve_device(config.device))
    state = make_state(faithful, features.dim, trainer.device)
    order = state.rng.permutation(len(features))
    batches = [order[i:i + faithful.batch_size] for i in range(0, len(order), faithful.batch_size)][:iterations]
    started = time.perf_counter()
    for batch in batches:
        trainer.step(state, batch, trainer.final_bank(state))  # a fresh bank every iteration
    per_iteration = (time.perf_counter() - started) / len(batches)
    per_epoch = per_iteration * int(np.ceil(len(features) / faithful.batch_size))
    settings = ", ".join(f"{k}={v}" for k, v in FAITHFUL.items())
    print(f"\n## faithful schedule ({settings})   load average {load_average()}")
    print(f"{per_iteration:.1f} s/iteration over {len(batches)} iterations -> {per_epoch:.0f} s/epoch "
          f"= {per_epoch / default_epoch:.0f}x a default epoch ({default_epoch:.2f} s)")


def benchmark_predict(model: FunAD, features: MethodFeatures, paths: list[Path], workers: list[int],
                      repeats: int) -> None:
    patchcore = copy.copy(model)  # shares the backbone; only the scorer differs
    patchcore.config = dataclasses.replace(model.config)  # predict sets num_workers on each
    patchcore.fitted_ = dataclasses.replace(
        model.fitted_, scorer=NearestNeighbourScorer(0.1, model.config.seed, sampling="random").fit(features))
    batch_size = model.config.batch_size_extract

    def bare(count: int) -> None:
        for _ in iterate_features(model.backbone, paths, batch_size=batch_size, num_workers=count,
                                  device=model.device, progress=False, description=""):
            pass

    def run(predictor: FunAD, count: int) -> None:
        predictor.config.num_workers = count
        for _ in predictor.predict(paths):
            pass

    configured_workers = model.config.num_workers
    runs = {"bare backbone": bare, "FUN-AD predict": lambda count: run(model, count),
            "PatchCore-style 10 % bank": lambda count: run(patchcore, count)}
    list(model.predict(paths[:batch_size]))  # warm-up: backbone weights, first-call allocations
    print(f"\n## predict ({len(paths)} images, batch {batch_size}, {torch.get_num_threads()} torch threads, "
          f"bank {len(patchcore.scorer_.bank_)} patches)   load average {load_average()}")
    print("img/s of wall time (in brackets: img per CPU-second, the figure a busy machine inflates least)")
    print("| DataLoader workers | bare backbone | FUN-AD predict | PatchCore-style | predict / bare "
          "| predict / PatchCore |")
    print("|---|---|---|---|---|---|")
    for count in workers:
        best = {name: float("inf") for name in runs}
        best_cpu = dict(best)
        for _ in range(repeats):
            for name, function in runs.items():
                started, cpu_started = time.perf_counter(), cpu_seconds()
                function(count)
                best[name] = min(best[name], time.perf_counter() - started)
                best_cpu[name] = min(best_cpu[name], cpu_seconds() - cpu_started)
        bare, predict, patchcore_ = (len(paths) / seconds for seconds in best.values())
        bare_cpu, predict_cpu, patchcore_cpu = (len(paths) / seconds for seconds in best_cpu.values())
        print(f"| {count} | {bare:.1f} ({bare_cpu:.1f}) | {predict:.1f} ({predict_cpu:.1f}) | "
              f"{patchcore_:.1f} ({patchcore_cpu:.1f}) | {predict / bare:.2f} ({predict_cpu / bare_cpu:.2f}) | "
              f"{predict / patchcore_:.2f} ({predict_cpu / patchcore_cpu:.2f}) |")
    model.config.num_workers = patchcore.config.num_workers = configured_workers
    print(f"load average {load_average()}")


def synthetic_features(folder: Path, count: int, patches: int, dim: int, seed: int) -> MethodFeatures:
    """Random fp16 features written through the feature cache, so they are read memory-mapped."""
    cache = FeatureCache(folder, {"grid": [1, patches], "patch_dim": dim, "global_dim": 1}, "synthetic")
    rng = np.random.default_rng(seed)
    arrays = [cache.put(f"image{i}", rng.standard_normal((patches, dim), dtype=np.float32), np.zeros(1))[0]
              for i in range(count)]
    return MethodFeatures(arrays)


def benchmark_growth(config: FunADConfig, sizes: list[int], patches: int, dim: int) -> None:
    print(f"\n## training cost per epoch vs training-set size (synthetic {patches}x{dim} fp16, "
          f"bank cap {config.bank_max_patches})   load average {load_average()}")
    print("| images | s/epoch (CPU s) | CPU ms/image | per image vs smallest (CPU) | bank entries | peak RSS MB |")
    print("|---|---|---|---|---|---|")
    smallest = None
    with tempfile.TemporaryDirectory(prefix="funad-speed-") as folder:
        for size in sizes:
            features = synthetic_features(Path(folder) / str(size), size, patches, dim, seed=size)
            trainer = Trainer(config, features, resolve_device(config.device))
            state = make_state(config, dim, trainer.device)
            started, cpu_started = time.perf_counter(), cpu_seconds()
            trainer.run_epoch(state)
            seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
            per_image = cpu / size
            smallest = smallest or per_image
            bank = trainer.final_bank(state)
            print(f"| {size} | {seconds:.1f} ({cpu:.1f}) | {1000 * per_image:.1f} | {per_image / smallest:.2f} | "
                  f"{len(bank.features)} | {peak_rss_mb()[0]:.0f} |")
    print(f"load average {load_average()}")


# Prefixed to a child's code: it reports its own peak RSS (VmHWM) when it exits. The parent's
# rusage cannot: a child's ru_maxrss includes this process's RSS at the fork before its exec.
_REPORT_PEAK_RSS = """
import atexit, sys
def _peak_rss():
    with open("/proc/self/status") as status:
        sys.stderr.write(next(line for line in status if line.startswith("VmHWM")) + "\\n")
atexit.register(_peak_rss)
"""


def run_command(code: str) -> tuple[float, float, float, str]:
    """Run Python ``code`` in a fresh process: its (wall seconds, CPU seconds, peak RSS MB, standard error); an
    error if it fails."""
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-c", _REPORT_PEAK_RSS + code], stdout=subprocess.DEVNULL,
                                   stderr=errors)
        _, status, usage = os.wait4(process.pid, 0)  # this child's own CPU time, not all children's
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        errors.seek(0)
        messages = errors.read().decode()
    if process.returncode:
        raise RuntimeError(f"{code} failed ({process.returncode}): {messages[-2000:]}")
    peak_kb = [line.split()[1] for line in messages.splitlines() if line.startswith("VmHWM")]
    peak_mb = float(peak_kb[-1]) / 1024 if peak_kb else float("nan")
    return seconds, usage.ru_utime + usage.ru_stime, peak_mb, messages


def funad_command(*arguments: str) -> str:
    """``funad ARGUMENTS...`` as Python code for :func:`run_command` (what the ``funad`` script runs)."""
    return f"import sys\nfrom funad.cli import main\nsys.exit(main({list(arguments)!r}))"


def exported_model(model_dir: Path, work: Path) -> Path:
    """``funad export`` of the model (the file that `funad predict` scores without torch)."""
    path = work / "model.onnx"
    run_command(funad_command("--quiet", "export", str(model_dir), "--format", "onnx", "--out", str(path)))
    return path


def scaled_copies(paths: list[Path], size: int, folder: Path) -> list[Path]:
    """Each image of ``paths`` scaled to ``size`` x ``size`` with noise of 3 grey levels, as PNG files in ``folder``."""
    from PIL import Image

    rng = np.random.default_rng(0)
    copies = []
    for path in paths:
        copies.append(folder / path.parent.name / path.name)
        copies[-1].parent.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC), np.float32)
        noisy = np.clip(pixels + rng.normal(0, 3, pixels.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(copies[-1], compress_level=1)
    return copies


def benchmark_startup(models: dict[str, Path], image: Path, repeats: int, work: Path) -> None:
    commands = {
        "funad --help": funad_command("--help"),
        "funad --version": funad_command("--version"),
        "import funad.cli": "import funad.cli",
    }
    for name, model in models.items():
        commands[f"funad predict, 1 image, {name}"] = funad_command("--quiet", "predict", str(model), str(image),
                                                                    "--out", str(work / "startup-predict"))

    def fresh_run(code: str) -> tuple[float, float, float]:
        shutil.rmtree(work / "startup-predict", ignore_errors=True)  # predict refuses an earlier prediction
        return run_command(code)[:3]

    print(f"\n## start-up (a fresh process each, median of {repeats})   load average {load_average()}")
    print("| command | wall s | CPU s | peak RSS MB |")
    print("|---|---|---|---|")
    for name, argv in commands.items():
        runs = np.array([fresh_run(argv) for _ in range(repeats)])
        wall, cpu, rss = np.median(runs, axis=0)
        print(f"| {name} | {wall:.2f} | {cpu:.2f} | {rss:.0f} |")
    print(f"load average {load_average()}")


def benchmark_cli(model: FunAD, models: dict[str, Path], paths: list[Path], few: int, variants: list[str],
                  repeats: int, work: Path) -> None:
    """``funad predict`` of all ``paths`` and of the first ``few``, against the bare backbone on all of them."""
    batch_size, workers = model.config.batch_size_extract, model.config.num_workers

    def bare() -> tuple[float, float]:
        started, cpu_started = time.perf_counter(), cpu_seconds()
        for _ in iterate_features(model.backbone, paths, batch_size=batch_size, num_workers=workers,
                                  device=model.device, progress=False, description=""):
            pass
        return time.perf_counter() - started, cpu_seconds() - cpu_started

    def predict(model_path: Path, images: list[Path], flags: str, out: Path) -> tuple[float, float, float]:
        """The command's wall and CPU seconds, and the seconds it logs for scoring (model loaded, torch imported)."""
        shutil.rmtree(out, ignore_errors=True)  # outside the timing: predict refuses an earlier prediction
        wall, cpu, _, messages = run_command(funad_command("predict", str(model_path), *map(str, images),
                                                           "--out", str(out), *flags.split()))
        scored = re.search(r"scored \d+ images in ([\d.]+) s", messages)
        assert scored, messages[-2000:]
        return wall, cpu, float(scored[1])

    bare()  # warm-up: first-call allocations, the file cache
    from PIL import Image

    with Image.open(paths[0]) as first:
        width, height = first.size
    print(f"\n## funad predict vs the bare backbone ({len(paths)} and {few} images, the first {width} x {height} px, "
          f"batch {batch_size}, "
          f"{workers} DataLoader workers, median of {repeats})   load average {load_average()}")
    print("marginal img/s = (N - n) / (t_N - t_n) of two `funad predict` processes. Each round runs the bare "
          "backbone and both commands back to back. 'best': the fastest of the rounds for each of the three "
          "(the bare pass, t_N, t_n; the commands' t from the seconds they log for scoring, so that their "
          "start-up's own variation stays out), the figure least disturbed by other work on a shared machine. "
          "'median': the median of the rounds' own ratios of whole-process times, then each round's ratio; in "
          "brackets per CPU-second")
    print("| model | predict flags | bare backbone img/s, best | funad predict marginal img/s, best "
          "| predict / bare, best | median (per CPU s) | rounds |")
    print("|---|---|---|---|---|---|---|")
    extra = len(paths) - few
    for (name, model_path), flags in itertools.product(models.items(), variants):
        rounds = []
        for repeat in range(repeats):
            out = work / f"cli-{repeat}"
            bare_wall, bare_cpu = bare()
            few_wall, few_cpu, few_scored = predict(model_path, paths[:few], flags, out / "few")
            all_wall, all_cpu, all_scored = predict(model_path, paths, flags, out / "all")
            ratio = extra / (all_wall - few_wall) / (len(paths) / bare_wall)
            ratio_cpu = extra / (all_cpu - few_cpu) / (len(paths) / bare_cpu)
            rounds.append([bare_wall, few_scored, all_scored, ratio, ratio_cpu])
        table = np.array(rounds)
        best_bare, best_few, best_all = table[:, :3].min(axis=0)
        bare_rate = len(paths) / best_bare
        ratio, ratio_cpu = np.median(table[:, 3:], axis=0)
        each = ", ".join(f"{value:.2f}" for value in table[:, 3])
        if best_all > best_few:
            marginal = extra / (best_all - best_few)
            marginal_cells = f"{marginal:.1f} | **{marginal / bare_rate:.2f}**"
        else:  # the logged seconds (to 0.01 s) cannot tell N images from n: too few or too fast to measure
            marginal_cells = "— | **—**"
        print(f"| {name} | {flags or '(defaults)'} | {bare_rate:.1f} | {marginal_cells} "
              f"| {ratio:.2f} ({ratio_cpu:.2f}) | {each} |")
    print(f"load average {load_average()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="an MVTec AD category folder, read in place")
    parser.add_argument("--faithful-iterations", type=int, default=2)
    parser.add_argument("--workers", default="0,1,2", help="DataLoader worker counts to compare in predict")
    parser.add_argument("--predict-images", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--growth", default="100,500,2000", help="training-set sizes for the per-epoch cost")
    parser.add_argument("--cli-few", type=int, default=8, help="images of the short `funad predict` run")
    parser.add_argument("--cli-variants", nargs="+", default=[""],
                        help="`funad predict` flags to compare, one string each ('' for the defaults)")
    parser.add_argument("--cli-image-size", type=int, default=None, metavar="N",
                        help="startup and cli: score the test images scaled to N x N pixels (with a camera's noise)")
    parser.add_argument("--cli-models", type=lambda text: text.split(","), default=["directory", "onnx"],
                        help="comma-separated: which of the model directory and its model.onnx export the "
                             "startup and cli sections time")
    parser.add_argument("--sections", default="fit,faithful,predict,growth,startup,cli",
                        help="faithful, predict, startup and cli imply fit")
    parser.add_argument("--model", type=Path, default=None,
                        help="a model directory written by `funad fit` for startup and cli, instead of fitting one")
    add_config_options(parser)
    args = parser.parse_args()
    if not args.cli_models or set(args.cli_models) - {"directory", "onnx"}:
        parser.error(f"--cli-models takes directory and/or onnx, got {','.join(args.cli_models)}")
    sections = set(args.sections.split(","))
    overrides = config_overrides(args)

    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, "
          f"settings {overrides or 'default'}, load average {load_average()}")
    train_paths, held_out = split_paths(args.data, seed=0)
    with tempfile.TemporaryDirectory(prefix="funad-speed-cache-") as cache:
        model = FunAD(cache_dir=cache, progress=False, **overrides)
        fitted_for = {"fit", "faithful", "predict"} | ({"startup", "cli"} if args.model is None else set())
        if sections & fitted_for:  # the others need the fitted model
            model, features, default_epoch = benchmark_fit(model, train_paths)
        elif args.model is not None:
            model = FunAD.load(args.model, **{name: value for name, value in overrides.items()  # what runs, not fits
                                              if name in LOAD_OVERRIDES})
        if "faithful" in sections:
            benchmark_faithful(model.config, features, default_epoch, args.faithful_iterations)
        if "predict" in sections:
            benchmark_predict(model, features, held_out[:args.predict_images],
                              [int(w) for w in args.workers.split(",")], args.repeats)
        if sections & {"startup", "cli"}:
            model_dir = args.model or model.save(Path(cache) / "model")
            models = {}
            if "directory" in args.cli_models:
                models["model directory"] = model_dir
            if "onnx" in args.cli_models:
                models["exported model.onnx"] = exported_model(model_dir, Path(cache))
            test_paths = sorted((args.data / "test").glob("*/*.png"))
            if args.cli_image_size:
                test_paths = scaled_copies(test_paths, args.cli_image_size, Path(cache) / "scaled")
            if "startup" in sections:
                benchmark_startup(models, test_paths[0], args.repeats, Path(cache))
            if "cli" in sections:
                benchmark_cli(model, models, test_paths, args.cli_few, args.cli_variants, args.repeats, Path(cache))
    if "growth" in sections:
        grid = model.backbone.grid
        benchmark_growth(model.config, [int(n) for n in args.growth.split(",")], grid[0] * grid[1],
                         model.backbone.patch_dim)


if __name__ == "__main__":
    main()
