"""`funad audit MODEL_DIR --out DIR`: which training images does the model itself find anomalous?

Writes audit.csv (every training image, highest score first: path, score, suspected) and, for
the suspected ones, heatmaps/<name>.png re-predicted from the training files.
"""

from __future__ import annotations

import argparse
import csv
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

AUDIT = "audit.csv"


def register(subparsers) -> None:
    parser = subparsers.add_parser("audit", help="rank the training images; heatmaps of those above the threshold")
    parser.add_argument("model", type=Path, help="model directory written by `funad fit`")
    parser.add_argument("--out", required=True, type=Path, help="folder for audit.csv and heatmaps/")
    parser.add_argument("--threshold", type=float, default=None, help="default: the model's label-free threshold")
    parser.add_argument("--device", default=None, help="auto | cpu | cuda")
    parser.set_defaults(run=run_audit)


def run_audit(args: argparse.Namespace) -> None:
    import numpy as np

    from funad.cli.predict import output_names
    from funad.model import FunAD
    from funad.reports.heatmaps import save_overlay

    model = FunAD.load(args.model, **({"device": args.device} if args.device else {}))
    model.progress = not args.quiet
    threshold = model.threshold_ if args.threshold is None else args.threshold
    scores = model.train_predict_scores_
    suspected = model.label(scores, threshold)
    order = np.argsort(-scores, kind="stable")
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / AUDIT, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "score", "suspected"])
        for index in order:
            writer.writerow([str(model.train_paths_[index]), f"{scores[index]:.6g}", bool(suspected[index])])

    suspects = [model.train_paths_[i] for i in order if suspected[i]]
    present = [path for path in suspects if path.is_file()]
    for path in suspects:
        if not path.is_file():
            logger.warning("training image %s no longer exists: no heatmap for it", path)
    names = dict(zip(present, output_names(present)))
    for prediction in model.predict(present):
        if prediction.anomaly_map is None:
            continue  # unreadable now: predict has logged why
        save_overlay(prediction.path, prediction.anomaly_map,
                     (args.out / "heatmaps" / names[prediction.path]).with_suffix(".png"), model.heatmap_range())
    print(f"{len(suspects)} of {len(scores)} training images score above {threshold:.6g}; "
          f"ranking in {args.out / AUDIT}")
