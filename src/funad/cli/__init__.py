"""The ``funad`` command. Each sub-command lives in its own module with ``register(subparsers)``."""

from __future__ import annotations

import argparse
import logging
import sys

from funad import __version__
from funad.cli import audit, benchmark, demo, export, fit, predict, report, serve

logger = logging.getLogger("funad")

COMMANDS = (fit, predict, audit, report, serve, export, benchmark, demo)


def _add_global_options(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument("--quiet", action="store_true", default=default,
                        help="no progress bars; warnings and errors only")
    parser.add_argument("--verbose", action="store_true", default=default,
                        help="debug logging, and the traceback of an error")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="funad", description="Fully unsupervised visual anomaly detection (FUN-AD).")
    parser.add_argument("--version", action="version", version=f"funad {__version__}")
    _add_global_options(parser, default=False)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(subparsers)
    for subparser in subparsers.choices.values():
        # Accepted after the sub-command too; SUPPRESS keeps a flag given before it from being reset.
        _add_global_options(subparser, default=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)
    # faiss tells at INFO which of its builds it tried to load: six lines, two of them a ModuleNotFoundError.
    logging.getLogger("faiss.loader").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    try:
        args.run(args)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        # One line for a user's mistake; --verbose adds the traceback a bug report needs.
        logger.error("%s", error, exc_info=args.verbose)
        return getattr(error, "exit_code", 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
