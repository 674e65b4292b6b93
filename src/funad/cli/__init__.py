"""The ``funad`` command. Each sub-command lives in its own module with ``register(subparsers)``."""

from __future__ import annotations

import argparse
import logging
import sys

from funad.cli import audit, benchmark, demo, fit, predict, report

logger = logging.getLogger("funad")

COMMANDS = (fit, predict, audit, report, benchmark, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="funad", description="Fully unsupervised visual anomaly detection (FUN-AD).")
    parser.add_argument("--quiet", action="store_true", help="no progress bars; warnings and errors only")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)
    try:
        args.run(args)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        logger.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
