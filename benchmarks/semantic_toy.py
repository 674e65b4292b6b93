"""The paper's semantic toy (section 5.1, appendix 4) at ``level="image"``, on scikit-learn's handwritten digits.

One class is normal and the other nine are the anomalies, as in the paper (CIFAR-10 and STL-10 there;
scikit-learn's 1 797 digits here, because they ship inside scikit-learn and need no download).
For each normal DIGIT and seed: a seeded 60 % of that digit's images are the normal training
images, and anomalies drawn from the other digits join them unlabelled at ``--contamination`` of
their count (the paper's 1:10 anomaly-to-normal ratio is 0.1); the test set is the digit's other
40 % and every other digit's image that is not in training (no overlap). Each image is scaled
from 8 x 8 to ``--pixels`` (bicubic), grey as RGB, and written once under ``--data``.

Methods, all on the same features (one vector per image: the backbone's global feature):

* ``funad``: ``FunAD(level="image")`` as it is, fitted on the contaminated training images
  (``fit_features``: Local-Net, then its scorer), scoring the test images;
* ``nearest_neighbour``: distance to the nearest training image's vector, every training image
  (the plain contaminated baseline, PatchCore on one vector per image without a coreset);
* ``nearest_neighbour_clean``: the same on the normal training images only (reads the labels:
  the reference a clean training set would give, never a choice).

Image AUROC per run in ``--out`` (JSON lines, appended as each finishes), and how funad's
label-free threshold labels the test images (``funad_label_recall``: the share of other digits
labelled anomalous; ``funad_label_false_alarm_rate``: the share of the normal digit's; the tail of
the threshold rule set by ``--threshold-tail-widths``); then the mean over digits and seeds::

    python benchmarks/semantic_toy.py --data ../digits_toy --seeds 0 1 2 --out runs/semantic_toy.jsonl

``--random-weights`` with a small ``--image-size`` is a smoke run (the test).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_digits

from funad import FunAD
from funad.features.cache import default_cache_dir
from funad.features.containers import FeatureSet, MethodFeatures
from funad.inference.scorers.knn import NearestNeighbourScorer
from funad.metrics import image_auroc, threshold_metrics

#: The normal class's share that trains; the rest is its test images.
TRAIN_SHARE = 0.6
METHODS = ("funad", "nearest_neighbour", "nearest_neighbour_clean")
LABELS = ("funad_label_recall", "funad_label_false_alarm_rate")


@dataclass
class ToySplit:
    """One normal digit's training and test images (indices into the digits), for one seed."""

    digit: int
    seed: int
    train_normal: np.ndarray
    contaminants: np.ndarray
    test: np.ndarray
    test_labels: np.ndarray  # 1 = anomalous (another digit)

    @property
    def train(self) -> np.ndarray:
        return np.concatenate([self.train_normal, self.contaminants])


def toy_split(targets: np.ndarray, digit: int, seed: int, contamination: float) -> ToySplit:
    rng = np.random.default_rng([seed, digit])
    normal = rng.permutation(np.flatnonzero(targets == digit))
    others = rng.permutation(np.flatnonzero(targets != digit))
    train_count = int(TRAIN_SHARE * len(normal))
    contaminants = others[:int(round(contamination * train_count))]
    test_normal, test_anomalies = normal[train_count:], others[len(contaminants):]
    return ToySplit(digit, seed, normal[:train_count], contaminants, np.concatenate([test_normal, test_anomalies]),
                    np.r_[np.zeros(len(test_normal)), np.ones(len(test_anomalies))])


def write_digits(folder: Path, pixels: int, per_digit: int | None = None) -> tuple[list[Path], np.ndarray]:
    """The digits (the first ``per_digit`` of each; None: all) as ``pixels``-square RGB PNG files under ``folder``
    (kept if already there), and their classes."""
    digits = load_digits()
    kept = np.sort(np.concatenate([np.flatnonzero(digits.target == digit)[:per_digit] for digit in range(10)]))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "readme.txt").write_text(
        "scikit-learn's copy of the UCI 'Optical Recognition of Handwritten Digits' test set (1 797 images, 8 x 8), "
        "scaled for funad's benchmarks/semantic_toy.py. Licence: CC BY 4.0 (UCI Machine Learning Repository, "
        "doi:10.24432/C50P49).\n")
    paths = []
    for index in kept:
        image, target = digits.images[index], digits.target[index]
        path = folder / f"{pixels}px" / str(target) / f"{index:04d}.png"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            grey = Image.fromarray(np.round(image * 255 / 16).astype(np.uint8))
            grey.resize((pixels, pixels), Image.Resampling.BICUBIC).convert("RGB").save(path)
        paths.append(path)
    return paths, np.asarray(digits.target[kept])


def nearest_neighbour_scores(vectors: np.ndarray, train: np.ndarray, test: np.ndarray) -> np.ndarray:
    bank = NearestNeighbourScorer(patch_fraction=1.0).fit(MethodFeatures([vector[None] for vector in vectors[train]]))
    return bank.score(torch.from_numpy(vectors[test][:, None]))[1].numpy()


def run(split: ToySplit, features: FeatureSet, vectors: np.ndarray, settings: dict) -> dict[str, float]:
    """``vectors``: ``features``' global vectors stacked ``[N, G]`` (the nearest neighbours' input)."""
    paths = features.paths
    model = FunAD(level="image", progress=False, cache_dir=False, seed=split.seed, **settings)
    model.fit_features(features.subset([paths[i] for i in split.train]))
    test = features.subset([paths[i] for i in split.test]).method_features("image")
    scores = {"funad": model.scorer_.score(test.take(range(len(test))))[1].numpy(),
              "nearest_neighbour": nearest_neighbour_scores(vectors, split.train, split.test),
              "nearest_neighbour_clean": nearest_neighbour_scores(vectors, split.train_normal, split.test)}
    labelled = threshold_metrics(split.test_labels.astype(int), scores["funad"] > model.threshold_)
    return {**{method: image_auroc(split.test_labels, scores[method]) for method in METHODS},
            "funad_label_recall": labelled["recall"], "funad_label_false_alarm_rate": labelled["false_alarm_rate"]}


def summary(records: Sequence[dict]) -> str:
    """Mean, lowest and highest over the runs (digits x seeds) of each method's AUROC and funad's label shares."""
    lines = ["| quantity | mean (%) | lowest (%) | highest (%) |", "|---|---|---|---|"]
    for key in METHODS + LABELS:
        values = 100 * np.array([record[key] for record in records])
        lines.append(f"| {key} | {values.mean():.2f} | {values.min():.2f} | {values.max():.2f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder the digit images are written to")
    parser.add_argument("--out", type=Path, required=True, help="JSON lines, one per (digit, seed)")
    parser.add_argument("--digits", type=int, nargs="+", default=list(range(10)), help="normal classes")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--contamination", type=float, default=0.1, help="anomalies per normal training image")
    parser.add_argument("--pixels", type=int, default=64, help="side of the written images")
    parser.add_argument("--per-digit", type=int, default=None, help="the first N images of each digit (default: all)")
    parser.add_argument("--backbone", default=None, help="default: funad's default backbone")
    parser.add_argument("--image-size", type=int, default=None, help="the backbone's input size")
    parser.add_argument("--epochs", type=int, default=None, help="Local-Net epochs (default: funad's)")
    parser.add_argument("--threshold-tail-widths", type=float, default=None, help="default: funad's")
    parser.add_argument("--random-weights", action="store_true", help="a smoke run: random backbone weights")
    args = parser.parse_args(argv)
    settings = {name: value for name, value in (("backbone", args.backbone), ("image_size", args.image_size),
                                                 ("epochs", args.epochs),
                                                 ("threshold_tail_widths", args.threshold_tail_widths))
                if value is not None}
    paths, targets = write_digits(args.data, args.pixels, args.per_digit)
    extractor = FunAD(level="image", pretrained=not args.random_weights, progress=False,
                      cache_dir=False if args.random_weights else default_cache_dir(), **settings)
    features = extractor.extract(paths, description="digits")
    if features.failures:
        raise ValueError(f"unreadable digit images: {sorted(map(str, features.failures))[:3]}")
    settings["pretrained"] = not args.random_weights
    vectors = np.stack([np.asarray(vector, dtype=np.float32) for vector in features.globals_])
    records = []
    for digit in args.digits:
        for seed in args.seeds:
            split = toy_split(targets, digit, seed, args.contamination)
            record = {"digit": digit, "seed": seed, "contamination": args.contamination,
                      "train_images": len(split.train), "contaminants": len(split.contaminants),
                      "test_images": len(split.test)} | run(split, features, vectors, settings)
            records.append(record)
            with args.out.open("a") as out:
                out.write(json.dumps(record) + "\n")
            print(" ".join(f"{key}={value:.4f}" if isinstance(value, float) else f"{key}={value}"
                           for key, value in record.items()), flush=True)
    print(summary(records))


if __name__ == "__main__":
    main()
