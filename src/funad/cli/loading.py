"""Loading a `funad fit` model directory for a command."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from funad.config import DEVICE_FORMS, check_device
from funad.utils.startup import garbage_collection_paused

if TYPE_CHECKING:
    from funad.model import FunAD


def load_model_directory(directory: Path, device: str | None) -> FunAD:
    """The model in ``directory``, on ``device`` when given (else the one it was saved for).

    torch and the model load with the garbage collector paused: the larger part of a short
    command's start-up (:func:`funad.utils.startup.garbage_collection_paused`).
    """
    with garbage_collection_paused():
        from funad.model import FunAD

        return FunAD.load(directory, **({"device": device} if device else {}))


def _device(text: str) -> str:
    """FunADConfig's check of a device, as an argparse type (whose ValueError argparse would replace by
    "invalid value")."""
    try:
        return check_device(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="model directory written by `funad fit`")


def add_device_option(parser: argparse.ArgumentParser) -> None:
    """``--device`` of the commands that load a fitted model (``funad fit``'s comes from its configuration)."""
    parser.add_argument("--device", type=_device, default=None,
                        help=f"{DEVICE_FORMS} (default: the device the model was saved for, as fitted)")
