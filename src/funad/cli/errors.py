"""Errors a command reports in one line, with the exit status they stand for."""

from __future__ import annotations


class NoInputImagesError(ValueError):
    """The inputs hold no image file: a usage error (exit status 2, as argparse uses), not a result."""

    exit_code = 2
