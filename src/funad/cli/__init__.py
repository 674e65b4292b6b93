"""The ``funad`` command. Each sub-command lives in its own module with ``register(subparsers)``."""

from __future__ import annotations

import argparse
import difflib
import logging
import sys
from collections.abc import Mapping

from funad import __version__
from funad.cli import audit, benchmark, demo, export, fit, predict, report, serve
from funad.utils.files import error_message

logger = logging.getLogger("funad")

COMMANDS = (fit, predict, audit, report, serve, export, benchmark, demo)


def _add_global_options(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument("--quiet", action="store_true", default=default,
                        help="no progress bars; warnings and errors only")
    parser.add_argument("--verbose", action="store_true", default=default,
                        help="debug logging, and the traceback of an error")


class _FunadParser(argparse.ArgumentParser):
    """The top-level parser. An argument no command knows is reported with that command's usage (argparse's own
    error shows the top level's, which lists only the commands), and the nearest option it has is suggested."""

    commands: Mapping[str, argparse.ArgumentParser]

    def parse_args(self, args=None, namespace=None):
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            command = self.commands[parsed.command]
            options = [option for action in command._actions for option in action.option_strings]
            nearest = [match for word in unknown if word.startswith("-")
                       for match in difflib.get_close_matches(word.split("=")[0], options, n=1, cutoff=0.8)]
            command.error(f"unrecognized arguments: {' '.join(unknown)}"
                          + (f" (did you mean {', '.join(nearest)}?)" if nearest else ""))
        return parsed


def build_parser() -> argparse.ArgumentParser:
    parser = _FunadParser(prog="funad", description="Fully unsupervised visual anomaly detection (FUN-AD).")
    parser.add_argument("--version", action="version", version=f"funad {__version__}")
    _add_global_options(parser, default=False)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(subparsers)
    parser.commands = subparsers.choices
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
    # matplotlib tells at INFO that it built its font cache, on a first run.
    logging.getLogger("matplotlib").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    try:
        args.run(args)
    except (ValueError, OSError, RuntimeError) as error:  # OSError: a missing input, an unwritable --out, ...
        # One line for a user's mistake; --verbose adds the traceback a bug report needs.
        logger.error("%s", error_message(error), exc_info=args.verbose)
        return getattr(error, "exit_code", 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
