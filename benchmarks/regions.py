"""Pixel F1 / IoU of funad's label-free defect masks against ground truth, next to the oracle.

On one contaminated split of an MVTec-layout category (SoftPatch's protocol: ``int(ratio x
train)`` test anomalies move, unlabelled, into training; evaluated on the rest, no-overlap),
funad is fitted and every test image predicted. An image labelled anomalous gets the mask
``map > pixel threshold``; an image labelled normal an empty mask (what `funad predict` writes
as regions). F1 and IoU count pixels over the whole test set. The oracle is the best F1 any
single pixel threshold reaches on the maps (chosen with the ground truth, so out of reach
without labels); its IoU is F1 / (2 - F1). Besides the threshold the model chose (``PIXEL_QUANTILE``
of the reference training patches), other quantiles are measured, to see what works.

Maps and masks are compared at ``--eval-size`` pixels square (masks resized nearest), which
keeps 83 bottle images at 5 M pixels.

    python benchmarks/regions.py --data ../shared/data/mvtec/bottle
    python benchmarks/regions.py --data DIR --config '{"backbone": "efficientnet_lite0"}' --json out.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from funad.benchmark.datasets import load_dataset
from funad.benchmark.protocol import make_split
from funad.inference.regions import PIXEL_QUANTILE, training_pixel_threshold
from funad.metrics import f1_max
from funad.model import FunAD, pixel_reference_images
from funad.utils.masks import read_mask


def _pixel_scores(true: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    true_positives = int((true & predicted).sum())
    wrong = int((true ^ predicted).sum())  # false positives + false negatives
    return {"f1": 2 * true_positives / max(2 * true_positives + wrong, 1),
            "iou": true_positives / max(true_positives + wrong, 1)}


def measure(data: Path, contamination: float, seed: int, quantiles: list[float], eval_size: int,
            config: dict, cache_dir: Path | bool | None = None) -> dict:
    split = make_split(load_dataset(data), contamination, seed)
    test = [sample for sample in split.test if sample.path not in split.moved_paths]
    model = FunAD(progress=False, cache_dir=cache_dir, seed=seed, **config).fit(split.train)

    size = (eval_size, eval_size)
    maps, truths, labelled_anomalous = [], [], []
    for sample, prediction in zip(test, model.predict([s.path for s in test], map_size=size)):
        assert prediction.anomaly_map is not None, f"{sample.path}: {prediction.error}"
        maps.append(prediction.anomaly_map)
        labelled_anomalous.append(bool(model.label(prediction.score)))
        if sample.mask is None:
            truths.append(np.zeros(size, dtype=bool))
        else:
            mask = Image.fromarray(read_mask(sample.mask)).resize(size[::-1], Image.Resampling.NEAREST)
            truths.append(np.asarray(mask))
    truth, stacked = np.stack(truths), np.stack(maps)
    gated = stacked[np.array(labelled_anomalous)]  # the maps of images labelled anomalous

    features = model.extract(model.train_paths_).method_features(model.config.level)
    reference = pixel_reference_images(model.trusted_images(model.train_scores_),
                                       model.train_predict_scores_ <= model.threshold_)
    rows = []
    for quantile in sorted(set(quantiles) | {PIXEL_QUANTILE}):
        threshold = training_pixel_threshold(model.scorer_, features, reference, quantile)
        predicted = np.zeros_like(truth)
        predicted[np.array(labelled_anomalous)] = gated > threshold
        rows.append({"quantile": quantile, "threshold": threshold, "chosen": quantile == PIXEL_QUANTILE,
                     **_pixel_scores(truth, predicted)})
    oracle_f1, oracle_threshold = f1_max(truth.ravel(), stacked.ravel())
    return {"data": str(data), "contamination": contamination, "seed": seed, "eval_size": eval_size,
            "test_images": len(test), "labelled_anomalous": int(sum(labelled_anomalous)),
            "truly_anomalous": sum(sample.label for sample in test), "label_free": rows,
            "oracle": {"f1": oracle_f1, "iou": oracle_f1 / (2 - oracle_f1), "threshold": oracle_threshold}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, type=Path, help="an MVTec-layout category folder")
    parser.add_argument("--contamination", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quantiles", type=float, nargs="+", default=[0.99, 0.995, 0.999, 0.9995, 0.9999])
    parser.add_argument("--eval-size", type=int, default=256)
    parser.add_argument("--config", type=json.loads, default={}, help="FunAD keyword settings as JSON")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results = measure(args.data, args.contamination, args.seed, args.quantiles, args.eval_size, args.config,
                      cache_dir=False if args.no_cache else None)
    print(f"{results['data']}: {results['test_images']} test images, {results['labelled_anomalous']} labelled "
          f"anomalous ({results['truly_anomalous']} truly); pixels at {args.eval_size}x{args.eval_size}")
    print("| pixel threshold | value | pixel F1 | pixel IoU |\n|---|---|---|---|")
    for row in results["label_free"]:
        name = f"quantile {row['quantile']}" + (" (funad's)" if row["chosen"] else "")
        print(f"| {name} | {row['threshold']:.4g} | {row['f1']:.3f} | {row['iou']:.3f} |")
    oracle = results["oracle"]
    print(f"| oracle (best F1, from the ground truth) | {oracle['threshold']:.4g} | {oracle['f1']:.3f} | "
          f"{oracle['iou']:.3f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
