"""Which training images, and how many of their patches, should form the "knn" scorer's bank?

For each split written by `funad benchmark`, fits FUN-AD once on the cached features, then scores
the whole test set (the overlap setting) with nearest-neighbour banks built from different
label-free choices of training images: the paper's min-max split (``judged_normal_``) or the
lowest-scoring share of the images, each with a greedy coreset or a random share of patches.
Labels are read only to evaluate.

    python benchmarks/knn_bank_choice.py runs/bottle_10/splits/bottle_0.1_*.json

Every ``funad fit`` setting is a flag here too (a smoke run: ``--backbone efficientnet_lite0 --image-size 64``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from funad import FunAD
from funad.benchmark.protocol import load_split
from funad.benchmark.runner import Evaluator
from funad.cli.fit import add_config_options, config_overrides
from funad.inference.scorers.knn import NearestNeighbourScorer

CHOICES = {  # name: (image rule, patch fraction, sampling)
    "min-max split, coreset 1%": ("judged", 0.01, "coreset"),
    "lowest 40%, coreset 1%": (0.4, 0.01, "coreset"),
    "lowest 50%, coreset 1%": (0.5, 0.01, "coreset"),
    "lowest 60%, coreset 1%": (0.6, 0.01, "coreset"),
    "lowest 50%, coreset 10%": (0.5, 0.1, "coreset"),
    "lowest 50%, random 10%": (0.5, 0.1, "random"),
}


def bank_images(model: FunAD, rule) -> np.ndarray:
    if rule == "judged":
        return np.flatnonzero(model.judged_normal_)
    return FunAD(knn_normal_share=rule).trusted_images(model.train_scores_)  # the lowest-scoring share, as funad's


def evaluate(split_file: Path, settings: dict | None = None) -> dict[str, tuple[float, float, int]]:
    split = load_split(split_file)
    moved = np.array(split.moved)
    settings = {**(settings or {}), "seed": split.seed}  # each split's own seed, whatever --seed says
    model = FunAD(progress=False, **settings)
    model.choose_preprocessing(split.train)  # aspect and align "auto", as `funad benchmark` chooses them
    train_features = model.extract(split.train)
    model.fit_features(train_features)
    # The whole test set (the overlap setting), scored and mapped as `funad benchmark` does.
    evaluator = Evaluator(split, ("overlap",), model.extract([sample.path for sample in split.test]), model,
                          pixels=any(sample.mask for sample in split.test))
    results = {}
    for name, (rule, fraction, sampling) in CHOICES.items():
        images = bank_images(model, rule)
        scorer = NearestNeighbourScorer(fraction, split.seed, sampling).fit(
            train_features.method_features("patch"), images)
        metrics = evaluator.evaluate(scorer)[0]["overlap"]
        results[name] = (metrics["image_auroc"], metrics.get("pixel_auroc", float("nan")), int(moved[images].sum()))
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("splits", nargs="+", type=Path)
    add_config_options(parser)
    args = parser.parse_args(argv)
    per_split = [evaluate(path, config_overrides(args)) for path in args.splits]
    print("| bank | image AUROC | pixel AUROC | planted anomalies in the bank's images |")
    print("|---|---|---|---|")
    for name in CHOICES:
        values = np.array([result[name] for result in per_split])
        print(f"| {name} | {100 * values[:, 0].mean():.2f} | {100 * values[:, 1].mean():.2f} | "
              f"{' / '.join(str(int(v)) for v in values[:, 2])} |")


if __name__ == "__main__":
    main()
