"""`funad audit MODEL_DIR --out DIR`: which training images does the model itself find anomalous?

Writes audit.csv (every training image, highest score first: path, score, suspected) and, for
the suspected ones, heatmaps/<relative path>.jpg (``part.png.jpg``; ``--heatmap-format png``: ``.png``)
re-predicted from the training files. Auditing again into the same folder replaces the earlier
audit's heatmaps, so none of a suspect no longer suspected stays behind; a folder holding a
prediction is refused, as its heatmaps/ would mix with the audit's.
"""

from __future__ import annotations

import argparse
import csv
import io
import shutil
from pathlib import Path

from funad.cli.loading import add_device_option, add_model_argument
from funad.cli.predict import add_heatmap_format_option, add_threshold_option
from funad.utils.arguments import existing_folder

AUDIT = "audit.csv"


def register(subparsers) -> None:
    parser = subparsers.add_parser("audit", help="rank the training images; heatmaps of those above the threshold")
    add_model_argument(parser)
    parser.add_argument("--out", required=True, type=Path, help="folder for audit.csv and heatmaps/")
    add_threshold_option(parser)
    add_device_option(parser)
    add_heatmap_format_option(parser)
    add_train_root_option(parser)
    parser.set_defaults(run=run_audit)


def add_train_root_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--train-root", type=existing_folder, default=None,
                        help="where the training folder is now, if it moved since `funad fit` (each image is "
                             "looked up at its old place relative to it, and checked by its content hash)")


def run_audit(args: argparse.Namespace) -> None:
    from funad.cli.loading import load_model_directory
    from funad.reports.heatmaps import save_overlay
    from funad.reports.prediction_folder import holds_prediction, output_file, output_names
    from funad.reports.training_images import locate_training_images, rank_training_images
    from funad.utils.files import write_text_atomically

    if holds_prediction(args.out):
        raise FileExistsError(f"{args.out} holds a prediction: its heatmaps/ would mix with the audit's; "
                              "choose another --out")
    model = load_model_directory(args.model, args.device)
    model.progress = not args.quiet
    threshold = model.threshold_ if args.threshold is None else args.threshold
    scores = model.train_predict_scores_
    order, suspected = rank_training_images(scores, threshold)
    args.out.mkdir(parents=True, exist_ok=True)
    if (args.out / AUDIT).exists():  # an earlier audit's: its heatmaps go with it
        shutil.rmtree(args.out / "heatmaps", ignore_errors=True)
    rows = io.StringIO()
    writer = csv.writer(rows)
    writer.writerow(["path", "score", "suspected"])
    for rank, index in enumerate(order):
        writer.writerow([str(model.train_paths_[index]), f"{scores[index]:.6g}", rank < suspected])
    write_text_atomically(args.out / AUDIT, rows.getvalue())  # a killed audit leaves the old file or the new one

    suspects = order[:suspected]
    present = list(locate_training_images(model.train_paths_, model.train_digests_, suspects,
                                          args.train_root).values())
    names = dict(zip(present, output_names(present)))
    suffix = "." + args.heatmap_format
    for path, prediction in zip(present, model.predict(present, keep_images=True)):
        if prediction.anomaly_map is None or prediction.image is None:
            continue  # unreadable now: predict has logged why
        mask, _ = model.defect_regions(prediction.anomaly_map)  # outlined as predict outlines an anomalous image's
        save_overlay(prediction.image, prediction.anomaly_map, args.out / output_file("heatmaps", names[path], suffix),
                     model.heatmap_range(), mask)
    print(f"{len(suspects)} of {len(scores)} training images score above {threshold:.6g}; "
          f"ranking in {args.out / AUDIT}")
