"""The command line end to end on one benchmark split: fit, predict, audit, report, with wall times.

Reads a split file written by `funad benchmark` (training images with a `moved` flag, the test
set with labels), then runs the real commands a user runs, with a fresh feature cache:

    funad fit <training images> --out MODEL
    funad predict MODEL <test images> --out PRED --report
    funad audit MODEL --out AUDIT

and prints: fit and predict wall times, the estimated contamination, precision/recall of the
label-free threshold's labels on the test set (no-overlap and overlap), and how many of the
moved (planted) anomalies the audit ranks in its top n (precision@n). Labels are read only to
score the outputs, never by the commands.

    python benchmarks/cli_end_to_end.py RESULTS_DIR/splits/bottle_0.1_0.json --work e2e-run

Flags it does not know go on to `funad fit` (a smoke run: ``--backbone efficientnet_lite0 --image-size 64``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from funad.metrics import image_auroc, threshold_metrics
from funad.reports.prediction_folder import row_path


def run(command: list[str], env_cache: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "funad.cli", "--quiet", *command], check=True,
                   env=os.environ | {"FUNAD_CACHE_DIR": str(env_cache)})
    return time.perf_counter() - started


def read_csv(path: Path) -> list[dict]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="Any other flags are passed on to `funad fit`.")
    parser.add_argument("split", type=Path)
    parser.add_argument("--work", type=Path, default=None)
    args, fit_flags = parser.parse_known_args(argv)
    split = json.loads(args.split.read_text())
    work = args.work or Path(tempfile.mkdtemp(prefix="funad-e2e-"))
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    cache = work / "cache"  # fresh: the fit time includes feature extraction

    train = [item["path"] for item in split["train"]]
    # scores.csv and audit.csv name images by absolute path; a split may name them relative to where it was made
    moved = {row_path(item["path"]) for item in split["train"] if item["moved"]}
    test = {row_path(item["path"]): item["label"] for item in split["test"]}
    fit_seconds = run(["fit", *train, "--out", str(work / "model"), *fit_flags], cache)
    predict_seconds = run(["predict", str(work / "model"), *test, "--out", str(work / "pred"), "--report"], cache)
    run(["audit", str(work / "model"), "--out", str(work / "audit")], cache)

    fitted = json.loads((work / "model" / "model.json").read_text())["fitted"]  # what the fit found, in the manifest
    rows = read_csv(work / "pred" / "scores.csv")
    audit = read_csv(work / "audit" / "audit.csv")
    top = [row["path"] for row in audit[:len(moved)]]
    result = {
        "training_images": len(train),
        "planted_anomalies": len(moved),
        "fit_seconds": round(fit_seconds, 1),
        "predict_seconds": round(predict_seconds, 1),
        "predict_images_per_second": round(len(test) / predict_seconds, 2),
        "estimated_contamination": fitted["contamination"],
        "threshold": fitted["threshold"],
        "audit_precision_at_n": sum(path in moved for path in top) / max(1, len(moved)),
        "audit_suspected": sum(row["suspected"].lower() in ("true", "1", "yes") for row in audit),
    }
    for setting, keep in (("no-overlap", lambda p: p not in moved), ("overlap", lambda p: True)):
        chosen = [row for row in rows if keep(row["path"])]
        labels = [test[row["path"]] for row in chosen]
        predicted = [row["label"] == "anomalous" for row in chosen]
        result[setting] = threshold_metrics(labels, predicted) | {
            "image_auroc": image_auroc(labels, [float(row["score"]) for row in chosen])}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
