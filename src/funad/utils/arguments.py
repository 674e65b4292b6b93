"""argparse types shared by the commands, funad's and the torch-free runtime's: a bad value is a usage error
(exit status 2) before any work, not a failure minutes into it."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

Number = TypeVar("Number", int, float)


class UsageError(ValueError):
    """A command given the wrong inputs or options, found after parsing: exit status 2, as argparse's own."""

    exit_code = 2


def _number(parse: Callable[[str], Number], accept: Callable[[Number], bool], wanted: str) -> Callable[[str], Number]:
    """An argparse type: ``parse`` the text, and refuse it unless ``accept``-ed, as "must be ``wanted``"."""

    def checked(text: str) -> Number:
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}")
        return value

    return checked


non_negative_int = _number(int, lambda value: value >= 0, "a whole number of at least 0")  # a seed
positive_int = _number(int, lambda value: value >= 1, "a whole number of at least 1")  # a count
positive_float = _number(float, lambda value: math.isfinite(value) and value > 0, "a number above 0")
# A threshold: NaN would label nothing, and say nothing about why.
finite_float = _number(float, math.isfinite, "a finite number")
port_number = _number(int, lambda value: 1 <= value <= 65535, "a port number from 1 to 65535")


def existing_folder(text: str) -> Path:
    """A folder that exists (a typo would otherwise surface as one warning per file looked for in it)."""
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is not a folder" if path.exists() else f"no such folder: {text}")
    return path
