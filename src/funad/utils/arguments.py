"""argparse types shared by the commands, funad's and the torch-free runtime's: a bad value is a usage error
(exit status 2) before any work, not a failure minutes into it."""

from __future__ import annotations

import argparse
import math
from pathlib import Path


class UsageError(ValueError):
    """A command given the wrong inputs or options, found after parsing: exit status 2, as argparse's own."""

    exit_code = 2


def non_negative_int(text: str) -> int:
    """A whole number of at least 0 (a seed)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 0, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """A count of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {text!r}")
    return value


def finite_float(text: str) -> float:
    """Any finite number (a threshold: NaN would label nothing, and say nothing about why)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def port_number(text: str) -> int:
    """A TCP port, 1 to 65535."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 1 to 65535, got {text!r}")
    return value


def existing_folder(text: str) -> Path:
    """A folder that exists (a typo would otherwise surface as one warning per file looked for in it)."""
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is not a folder" if path.exists() else f"no such folder: {text}")
    return path
