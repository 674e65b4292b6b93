"""How funad's label-free threshold labels test images, for several tail widths (``threshold_tail_widths``).

For each DATASET (``ROOT`` or ``ROOT:CATEGORY``, as for ``funad benchmark``) and seed, one split of
the contaminated-data protocol (``--contamination``): ``FunAD()`` with today's defaults is fitted
once on the contaminated training images (``fit_features``; features from the cache), and the
test images are scored. Then, for each width w of ``--widths``, the threshold is estimated from the
training scores alone as ``fit`` estimates it with ``threshold_tail_widths=w`` (the two-mode
mixture where the scores show a separate anomalous mode, else median + w robust standard
deviations; ``funad.method.threshold``), and the test images are labelled with it. Test labels
are read only to measure, per setting (no-overlap, overlap):

* ``recall``: the share of anomalous test images labelled anomalous;
* ``false_alarm_rate``: the share of good test images labelled anomalous;
* ``balanced_accuracy``: (recall + 1 - false_alarm_rate) / 2, which does not depend on the
  test sets' ratio of anomalous to good images (the dev sets' test sets are mostly anomalous);
* ``method`` ("mixture" or "robust tail") and the estimated contamination.

Records are appended to ``--out`` as each dataset finishes; ``--summary`` prints the mean over
seeds per dataset, setting and width::

    python benchmarks/threshold_tail.py ../shared/data/mvtec:bottle ../shared/data/mvtec:screw \\
        ../shared/data/magnetic_tile --seeds 0 1 2 --out runs/threshold_tail.jsonl
    python benchmarks/threshold_tail.py --summary runs/threshold_tail.jsonl

FunADConfig flags (``--epochs 2``, ``--backbone``, ...) apply to the fitted model; ``--random-weights``
(tests) uses an untrained backbone without the cache.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from funad import FunAD
from funad.benchmark.datasets import load_dataset, parse_dataset
from funad.benchmark.protocol import SETTINGS, make_split
from funad.cli.fit import add_config_options, config_overrides
from funad.features.cache import default_cache_dir
from funad.method.threshold import estimate_threshold
from funad.metrics import threshold_metrics

WIDTHS = (1.5, 2.0, 2.5, 3.0)


def label_quality(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    labelled = threshold_metrics(labels, scores > threshold)
    recall, false_alarm_rate = labelled["recall"], labelled["false_alarm_rate"]
    return {"recall": recall, "false_alarm_rate": false_alarm_rate,
            "balanced_accuracy": (recall + 1 - false_alarm_rate) / 2}


def measure(text: str, seeds: Sequence[int], contamination: float, widths: Sequence[float], settings: dict,
            random_weights: bool) -> list[dict]:
    """One record per (seed, width, setting) of the dataset ``text``."""
    root, category = parse_dataset(text)
    dataset = load_dataset(root, category)
    extractor = FunAD(progress=False, pretrained=not random_weights,
                      cache_dir=False if random_weights else default_cache_dir(), **settings)
    records = []
    for seed in seeds:
        split = make_split(dataset, contamination, seed)
        extractor.choose_preprocessing(split.train)
        features = extractor.extract(list(dict.fromkeys(split.train + [s.path for s in split.test])))
        model = FunAD(progress=False, pretrained=not random_weights, cache_dir=extractor.cache_dir,
                      **settings | {"seed": seed, **extractor.resolved_preprocessing()})
        model.fit_features(features.subset(split.train))
        test = features.subset([sample.path for sample in split.test]).method_features(model.config.level)
        scores = np.concatenate([model.scorer_.score(test.take(range(start, min(start + 32, len(test)))))[1].numpy()
                                 for start in range(0, len(test), 32)])
        row = {sample.path: index for index, sample in enumerate(split.test)}
        for width in widths:
            estimate = estimate_threshold(model.train_predict_scores_, model.judged_normal_, width)
            for setting in SETTINGS:
                tested = split.test_set(setting)
                quality = label_quality(scores[[row[sample.path] for sample in tested]],
                                        np.array([sample.label for sample in tested]), estimate.threshold)
                records.append({"dataset": dataset.name, "seed": seed, "contamination": contamination, "width": width,
                                "setting": setting, "method": estimate.method,
                                "estimated_contamination": estimate.contamination, **quality})
    return records


def summary(records: Sequence[dict]) -> str:
    """Mean over seeds per (dataset, setting, width); how many seeds' thresholds came from each rule."""
    lines = ["| dataset | setting | width | recall | false-alarm rate | balanced accuracy | seeds: mixture / "
             "robust tail |", "|---|---|---|---|---|---|---|"]
    groups: dict[tuple, list[dict]] = {}
    for record in records:
        groups.setdefault((record["dataset"], record["setting"], record["width"]), []).append(record)
    for (dataset, setting, width), members in sorted(groups.items()):
        mean = {key: 100 * np.mean([m[key] for m in members])
                for key in ("recall", "false_alarm_rate", "balanced_accuracy")}
        methods = [m["method"] for m in members]
        lines.append(f"| {dataset} | {setting} | {width:g} | {mean['recall']:.1f} | {mean['false_alarm_rate']:.1f} | "
                     f"{mean['balanced_accuracy']:.1f} | {methods.count('mixture')} / {methods.count('robust tail')} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("datasets", nargs="*", help="ROOT or ROOT:CATEGORY")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--contamination", type=float, default=0.1)
    parser.add_argument("--widths", type=float, nargs="+", default=list(WIDTHS))
    parser.add_argument("--out", type=Path, help="JSON lines, appended as each fit finishes")
    parser.add_argument("--summary", type=Path, help="print the summary of these records and stop")
    parser.add_argument("--random-weights", action="store_true", help="an untrained backbone (tests)")
    add_config_options(parser)  # --seed is --seeds' and the widths are --widths': both ignored
    args = parser.parse_args(argv)
    if args.summary:
        print(summary([json.loads(line) for line in args.summary.read_text().splitlines()]))
        return
    if not args.datasets or args.out is None:
        parser.error("give DATASETS and --out (or --summary FILE)")
    settings = {name: value for name, value in config_overrides(args).items()
                if name not in ("seed", "threshold_tail_widths")}
    records = []
    for text in args.datasets:
        found = measure(text, args.seeds, args.contamination, args.widths, settings, args.random_weights)
        with args.out.open("a") as out:
            out.writelines(json.dumps(record) + "\n" for record in found)
        records += found
    print(summary(records))


if __name__ == "__main__":
    main()
