"""Finding a model's training images again, for `funad audit` and the report's suspects.

A model stores each training image's absolute path and the SHA-256 of its content. When the
training folder has moved, ``train_root`` names its new place: every path is re-pointed there,
relative to the deepest folder the training images had in common, and the content hash
confirms that the file found is the image the model was trained on (where the model knows it:
features fitted without their files have no hash).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from funad.method.threshold import above_threshold
from funad.utils.files import common_folder, file_digest

logger = logging.getLogger(__name__)


def rank_training_images(scores: np.ndarray, threshold: float) -> tuple[list[int], int]:
    """The training images' indices, highest score first (ties in training order), and how many of them,
    from the first, are suspected: scored above ``threshold``, as ``FunAD.label`` labels anomalous."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable").tolist()  # NaN last: never suspected
    return order, int(np.count_nonzero(above_threshold(scores, threshold)))


def locate_training_images(paths: list[Path], digests: list[str], wanted: list[int],
                           train_root: Path | None = None) -> dict[int, Path]:
    """Where the training images ``wanted`` (indices into ``paths``) are now; missing or changed ones are
    left out with a warning naming the file."""
    old_root = common_folder(paths) if paths else Path()
    found = {}
    for index in wanted:
        path = paths[index]
        if train_root is not None:
            path = train_root / path.relative_to(old_root)
        if not path.is_file():
            hint = "" if train_root is not None else " (moved? point at the folder with --train-root)"
            logger.warning("training image %s no longer exists%s: no heatmap for it", path, hint)
        elif digests[index] and file_digest(path) != digests[index]:
            logger.warning("training image %s differs from the image the model was trained on: no heatmap for it",
                           path)
        else:
            found[index] = path
    return found
