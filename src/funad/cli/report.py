"""`funad report PRED_DIR [--ground-truth DIR]`: one self-contained report.html for a prediction folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from funad.cli.audit import add_train_root_option
from funad.utils.arguments import positive_int


def register(subparsers) -> None:
    parser = subparsers.add_parser("report", help="write report.html for a `funad predict` output folder")
    parser.add_argument("predictions", type=Path, help="output folder of `funad predict`")
    parser.add_argument("--ground-truth", type=Path, default=None,
                        help="MVTec-layout mask folder (<type>/<name>_mask.png); images in a 'good' folder are "
                             "normal, others anomalous. Adds image AUROC, precision/recall/F1 and pixel AUROC")
    parser.add_argument("--out", type=Path, default=None, help="report file (default PRED_DIR/report.html)")
    parser.add_argument("--max-images", type=positive_int, default=None, metavar="N",
                        help="rows of the predictions table, highest scores first (default 200)")
    add_train_root_option(parser)
    parser.set_defaults(run=run_report)


def run_report(args: argparse.Namespace) -> None:
    from funad.reports.html import write_report

    path = write_report(args.predictions, ground_truth=args.ground_truth, out_path=args.out,
                        train_root=args.train_root, max_images=args.max_images)
    print(path)
