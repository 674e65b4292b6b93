"""Compare candidate default backbones with a quick PatchCore-style nearest-neighbour proxy.

Label-free at train time: a memory bank of patch features from the clean ``train/good`` images
of one MVTec AD category (a random 10 % subsample, exact search); a test patch scores its
distance to the nearest bank patch; image score = max patch score; anomaly map drawn as funad's
benchmark draws it (:func:`funad.inference.maps.patch_scores_to_maps`): patch scores upsampled
bilinearly to the backbone's input size, blurred there with a Gaussian (sigma 4), resized to
256x256, where the ground-truth masks are scaled to (nearest). Reported: image AUROC, pixel AUROC
(all test pixels with ground truth, binned: :class:`funad.metrics.PixelMetrics`) and
feature-extraction throughput at batch 16 on ``--threads`` CPU threads, preprocessing excluded,
after one warm-up batch: images/s of the fastest of ``--repeats`` batches, and CPU milliseconds
per image (less sensitive to a busy machine).

The dataset is read in place (``--data``: a folder :func:`funad.benchmark.datasets.load_dataset`
reads, its images by :func:`funad.data.images.load_image`); nothing is copied into the repository::

    PYTHONPATH=src python benchmarks/backbone_probe.py --data ../shared/data/mvtec/bottle
    PYTHONPATH=src python benchmarks/backbone_probe.py --data ../shared/data/mvtec/bottle --sweep

Candidates are given as ``--candidates`` specs: a registered backbone name
(``efficientnet_lite0``, ``imgfocus_dinov2_vits14``), or ``onnx:key=value,...`` for a variant of
the ONNX DINOv2 with keys ``layers`` (``7`` or ``6-9`` or ``6+9``), ``combine`` (mean|concat),
``norm`` (0|1: final LayerNorm), ``cls`` (0|1: concat CLS to each patch), ``k`` (local average
kernel, 1 = off) and ``size`` (input pixels). ``--sweep`` instead extracts every block once and
scores a grid of ONNX configurations (quality only; throughput depends on the deepest block).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from funad.benchmark.datasets import Dataset, load_dataset
from funad.data.images import load_image
from funad.data.preprocessing import normalised_array
from funad.inference.maps import patch_scores_to_maps
from funad.metrics import PixelMetrics, image_auroc
from funad.utils.masks import read_mask
from funad.utils.shares import share_count

MAP_SIZE = 256
SIGMA = 4.0
DEFAULT_CANDIDATES = [
    "efficientnet_lite0",
    "imgfocus_dinov2_vits14",  # default: mean of blocks 4, 6 and 8, final LayerNorm, patch token only, no pooling
    "onnx:layers=6,norm=1,cls=1,k=1",  # + CLS, as the paper does for ViTs
    "onnx:layers=4,norm=1,cls=0,k=1",
    "onnx:layers=5-8,combine=mean,norm=1,cls=0,k=1",
    "onnx:layers=7,norm=1,cls=0,k=3",
    "onnx:layers=11,norm=1,cls=1,k=1",  # last block, what ViTBackbone would use
    "onnx:layers=6,norm=1,cls=0,k=1,size=448",
]


# --------------------------------------------------------------------------- data


@dataclass
class TestSet:
    labels: np.ndarray  # [N] 1 = anomalous
    truth: dict[int, np.ndarray | None]  # images in the pixel AUROC: mask [MAP_SIZE, MAP_SIZE] bool, None = normal


def read_test_set(dataset: Dataset) -> TestSet:
    """The test samples' labels, and their ground truth at ``MAP_SIZE`` (nearest). An anomalous image without a
    mask has no pixel ground truth and is left out of the pixel AUROC, as in funad's benchmark."""
    truth: dict[int, np.ndarray | None] = {}
    for index, sample in enumerate(dataset.test):
        if sample.mask is not None:
            mask = Image.fromarray(read_mask(sample.mask)).resize((MAP_SIZE, MAP_SIZE), Image.Resampling.NEAREST)
            truth[index] = np.asarray(mask)
        elif not sample.label:
            truth[index] = None
    return TestSet(np.array([sample.label for sample in dataset.test]), truth)


class ImageStore:
    """Decoded RGB images kept in memory, preprocessed per backbone as funad does (whole image resized, bilinear)."""

    def __init__(self, paths: list[Path]):
        self.images = [load_image(path) for path in paths]
        self._cache: dict[tuple, torch.Tensor] = {}

    def tensor(self, size: int, mean, std) -> torch.Tensor:
        key = (size, tuple(mean), tuple(std))
        if key not in self._cache:
            self._cache[key] = torch.from_numpy(np.stack([normalised_array(image, size, mean, std)
                                                          for image in self.images]))
        return self._cache[key]


# --------------------------------------------------------------------------- scoring


def nn_scores(train_patches: np.ndarray, test_patches: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """train [N, K, D], test [M, K, D] -> NN L2 distance per test patch [M, K]."""
    from funad.inference.search import FlatIndex

    bank = train_patches.reshape(-1, train_patches.shape[-1])
    rng = np.random.default_rng(seed)
    keep = rng.choice(len(bank), size=share_count(fraction, len(bank)), replace=False)
    distances, _ = FlatIndex(bank[keep]).search(test_patches.reshape(-1, test_patches.shape[-1]), 1)
    return np.sqrt(distances[:, 0]).reshape(test_patches.shape[:2])


def evaluate(train_patches, test_patches, grid, input_size: int, test: TestSet, fraction: float,
             seed: int) -> tuple[float, float]:
    scores = nn_scores(train_patches, test_patches, fraction, seed)
    maps = patch_scores_to_maps(torch.from_numpy(scores.astype(np.float32)), grid, input_size, SIGMA,
                                (MAP_SIZE, MAP_SIZE)).numpy()
    pixels = PixelMetrics()
    for index, mask in test.truth.items():
        pixels.update(maps[index], mask)
    return image_auroc(test.labels, scores.max(axis=1)), pixels.pixel_auroc()


# --------------------------------------------------------------------------- candidates


def parse_layers(text: str) -> tuple[int, ...]:
    if "-" in text:
        low, high = (int(part) for part in text.split("-"))
        return tuple(range(low, high + 1))
    return tuple(int(part) for part in text.split("+"))


def build(spec: str):
    from funad.features.backbones import create_backbone
    from funad.features.backbones.onnx_dinov2 import OnnxDinov2Backbone, packaged_model_path

    if not spec.startswith("onnx:"):
        return create_backbone(spec)
    options = dict(item.split("=", 1) for item in spec[len("onnx:"):].split(",") if item)
    unknown = set(options) - {"layers", "combine", "norm", "cls", "k", "size"}
    if unknown:
        raise SystemExit(f"unknown keys {sorted(unknown)} in candidate {spec!r}")
    backbone = OnnxDinov2Backbone(
        packaged_model_path(),
        name=spec,
        layers=parse_layers(options.get("layers", "7")),
        combine=options.get("combine", "mean"),
        apply_norm=bool(int(options.get("norm", "1"))),
        concat_cls=bool(int(options.get("cls", "0"))),
        local_kernel=int(options.get("k", "3")),
        image_size=int(options["size"]) if "size" in options else None,
    )
    return backbone.eval()


@torch.inference_mode()
def extract(backbone, images: torch.Tensor, batch: int) -> np.ndarray:
    """Patch features [N, K, D]."""
    parts = [backbone(images[first:first + batch]).patches.float().numpy() for first in range(0, len(images), batch)]
    return np.concatenate(parts)


@torch.inference_mode()
def throughput(backbone, images: torch.Tensor, repeats: int) -> tuple[float, float]:
    """(images/s from the fastest of ``repeats`` timed batches, CPU seconds per image, median).

    The fastest batch is the least disturbed by other processes on a shared machine; CPU time
    (all threads of this process) is a second, load-insensitive view: on an idle machine
    images/s ~= threads / cpu_s_per_image.
    """
    backbone(images)  # warm-up: session creation, allocator
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        backbone(images)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return len(images) / min(walls), float(np.median(cpus)) / len(images)


def run_candidates(args, train_store, test_store, test: TestSet) -> list[dict]:
    rows = []
    for spec in args.candidates:
        backbone = build(spec)
        prep = backbone.preprocessing
        train_x = train_store.tensor(prep.image_size, prep.mean, prep.std)
        test_x = test_store.tensor(prep.image_size, prep.mean, prep.std)
        speed, cpu_per_image = throughput(backbone, train_x[:args.batch], args.repeats)
        if args.speed_only:
            rows.append(dict(candidate=spec, size=prep.image_size, grid=f"{backbone.grid[0]}x{backbone.grid[1]}",
                             dim=backbone.patch_dim, image_auroc=float("nan"), pixel_auroc=float("nan"), img_s=speed,
                             cpu_ms=1000 * cpu_per_image))
            print(f"  {spec}: {speed:.1f} img/s  {1000 * cpu_per_image:.0f} CPU ms/img", file=sys.stderr, flush=True)
            continue
        train_f = extract(backbone, train_x, args.batch)
        test_f = extract(backbone, test_x, args.batch)
        image_auroc, pixel_auroc = evaluate(train_f, test_f, backbone.grid, prep.image_size, test, args.fraction,
                                            args.seed)
        rows.append(dict(candidate=spec, size=prep.image_size, grid=f"{backbone.grid[0]}x{backbone.grid[1]}",
                         dim=backbone.patch_dim, image_auroc=image_auroc, pixel_auroc=pixel_auroc, img_s=speed,
                         cpu_ms=1000 * cpu_per_image))
        print(f"  {spec}: image AUROC {image_auroc:.4f}  pixel AUROC {pixel_auroc:.4f}  {speed:.1f} img/s  "
              f"{1000 * cpu_per_image:.0f} CPU ms/img", file=sys.stderr, flush=True)
    return rows


def run_sweep(args, train_store, test_store, test: TestSet) -> list[dict]:
    """Extract all blocks once, then score many layer / norm / CLS / pooling combinations."""
    from funad.features.backbones.onnx_dinov2 import OnnxDinov2Backbone, packaged_model_path

    path = packaged_model_path()
    probe = OnnxDinov2Backbone(path, layers=range(12), local_kernel=1, image_size=args.sweep_size)
    prep = probe.preprocessing
    blocks = {}
    for split, store in (("train", train_store), ("test", test_store)):
        x = store.tensor(prep.image_size, prep.mean, prep.std)
        parts = []
        with torch.inference_mode():
            for first in range(0, len(x), args.batch):
                parts.append([tokens.half() for tokens in probe.run_blocks(x[first:first + args.batch])])
        blocks[split] = [torch.cat([part[i] for part in parts]) for i in range(len(probe.layers))]
    layer_sets = [(i,) for i in range(3, 12)] + [(6, 7, 8, 9), (5, 6, 7, 8), (7, 8)]
    rows = []
    for layers, norm, cls, kernel in itertools.product(layer_sets, (True, False), (False, True), (1, 3)):
        combines = ("mean", "concat") if len(layers) > 1 else ("mean",)
        for combine in combines:
            # features_from_blocks only reads these attributes, so one probe serves every config.
            probe.apply_norm, probe.concat_cls, probe.local_kernel, probe.combine = norm, cls, kernel, combine
            feats = {}
            for split in ("train", "test"):
                chosen = [blocks[split][i].float() for i in layers]
                feats[split] = probe.features_from_blocks(chosen).patches.numpy()
            image_auroc, pixel_auroc = evaluate(feats["train"], feats["test"], probe.grid, prep.image_size, test,
                                                args.fraction, args.seed)
            name = (f"layers={'+'.join(map(str, layers))},combine={combine},norm={int(norm)},cls={int(cls)},k={kernel}"
                    if len(layers) > 1 else f"layers={layers[0]},norm={int(norm)},cls={int(cls)},k={kernel}")
            rows.append(dict(candidate="onnx:" + name, size=prep.image_size, grid=f"{probe.grid[0]}x{probe.grid[1]}",
                             dim=feats["test"].shape[-1], image_auroc=image_auroc, pixel_auroc=pixel_auroc,
                             img_s=float("nan"), cpu_ms=float("nan")))
            print(f"  {rows[-1]['candidate']}: {image_auroc:.4f} {pixel_auroc:.4f}", file=sys.stderr, flush=True)
    return rows


def print_table(rows: list[dict]) -> None:
    width = max(len(row["candidate"]) for row in rows)
    print(f"{'candidate':<{width}}  size  grid   dim   img AUROC  pix AUROC    img/s  CPU ms/img")
    for row in rows:
        speed = "      -" if np.isnan(row["img_s"]) else f"{row['img_s']:7.1f}"
        cpu = "     -" if np.isnan(row["cpu_ms"]) else f"{row['cpu_ms']:6.0f}"
        print(f"{row['candidate']:<{width}}  {row['size']:>4}  {row['grid']:<5} {row['dim']:>4}   "
              f"{row['image_auroc']:6.4f}     {row['pixel_auroc']:6.4f}   {speed}      {cpu}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True,
                        help="an MVTec AD category folder (train/, test/, ground_truth/)")
    parser.add_argument("--candidates", nargs="+", default=DEFAULT_CANDIDATES)
    parser.add_argument("--sweep", action="store_true", help="score a grid of ONNX block/norm/CLS/pooling configs")
    parser.add_argument("--sweep-size", type=int, default=None, help="input size for --sweep (default: the model's)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5, help="timed batches for the throughput (best is kept)")
    parser.add_argument("--speed-only", action="store_true", help="measure throughput only, skip the AUROCs")
    parser.add_argument("--fraction", type=float, default=0.1, help="memory-bank subsample of train patches")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    try:
        import faiss

        faiss.omp_set_num_threads(args.threads)
    except (ImportError, AttributeError):
        pass
    try:
        dataset = load_dataset(args.data)
        test = read_test_set(dataset)
        print(f"{args.data}: {len(dataset.train)} train images, {len(dataset.test)} test images "
              f"({int(test.labels.sum())} anomalous)", file=sys.stderr)
        train_store, test_store = ImageStore(dataset.train), ImageStore([sample.path for sample in dataset.test])
    except (OSError, ValueError) as error:  # no known layout, an unreadable image (ImageLoadError) or mask
        raise SystemExit(f"error: {error}") from error
    run = run_sweep if args.sweep else run_candidates
    rows = run(args, train_store, test_store, test)
    print_table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
