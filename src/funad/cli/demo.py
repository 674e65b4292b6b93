"""`funad demo`: the embedded end-to-end example."""

from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="build a small contaminated dataset, fit, predict, print AUROC")
    parser.add_argument("--out", type=Path, default=Path("funad-demo"),
                        help="working folder: new, or an earlier demo's, whose data/ and model/ are replaced "
                             "(default funad-demo)")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(run=run_demo)


def run_demo(args) -> None:
    from funad.demo import run_demo as demo

    demo(args.out, seed=args.seed, progress=not args.quiet)
