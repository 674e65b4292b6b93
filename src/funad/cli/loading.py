"""Loading a `funad fit` model directory for a command."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

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
