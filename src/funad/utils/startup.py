"""Starting a command quickly: Python's cyclic garbage collector paused while the heavy libraries load."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def garbage_collection_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector inside the block; after it, freeze what exists and resume.

    Importing torch creates about 300 000 objects, and each collection it triggers walks those
    made before: collections took about a quarter of a one-image `funad predict` (docs/speed.md).
    The modules and the loaded model live as long as the process, so they are frozen (left out
    of every later collection, and of the one at exit) instead of being walked again and again.
    The few thousand small cyclic objects the block leaves as garbage stay with them.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()
