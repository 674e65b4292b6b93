"""Scoring images with a model written by ``funad export --format onnx``: onnxruntime, numpy and pillow only.

Nothing here imports torch (nor funad's training stack), so a deployment installs only those
three packages besides funad. Images are read and preprocessed by the same code as
``funad predict`` (:mod:`funad.data.images`, :mod:`funad.data.preprocessing`); maps are resized to
each image's size with the same bilinear rule as ``funad predict``'s (:mod:`funad.utils.resize`).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime
from onnxruntime.capi import onnxruntime_pybind11_state as _ort_errors
from PIL import Image

from funad.data.images import ImageLoadError, load_image
from funad.data.preprocessing import backbone_input
from funad.export.metadata import PIXEL_THRESHOLD_KEY, PREPROCESSING_KEYS, THRESHOLD_KEY, preprocessing_from_metadata
from funad.inference.prediction import MapSize, Prediction, map_shape
from funad.method.threshold import above_threshold
from funad.utils.letterbox import content_box
from funad.utils.pose import ObjectPose, map_to_photo
from funad.utils.resize import resize_bilinear

if TYPE_CHECKING:
    from funad.inference.regions import Region

logger = logging.getLogger(__name__)

#: Images scored per ``session.run``.
BATCH_SIZE = 8
#: What onnxruntime raises for a file it cannot load as a model (its errors share no base class but Exception):
#: not a protobuf (InvalidProtobuf), no graph (InvalidArgument), an invalid graph (InvalidGraph), an operator or
#: opset it lacks (NotImplemented, Fail).
_SESSION_ERRORS = (_ort_errors.Fail, _ort_errors.InvalidArgument, _ort_errors.InvalidGraph,
                   _ort_errors.InvalidProtobuf, _ort_errors.NoModel, _ort_errors.NotImplemented,
                   _ort_errors.RuntimeException)


@dataclass
class OnnxResult:
    scores: np.ndarray  # float32 [B]
    maps: np.ndarray  # float32 [B, S, S] at the model's input size
    labels: np.ndarray  # bool [B]: score above the model's threshold
    poses: list[ObjectPose | None]  # the poses the images were turned from (metadata align_object)


class OnnxModel:
    """An exported model and the preprocessing and calibration recorded in its metadata.

    Besides :meth:`run` on loaded images it predicts files as :class:`funad.FunAD` does
    (:meth:`predict`, :meth:`label`, :meth:`defect_regions`, :meth:`heatmap_range` and the
    fitted thresholds), so ``funad predict model.onnx`` writes the same outputs without torch.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.is_dir():
            raise ValueError(f"{self.path} is a folder, not an ONNX file: a model directory written by `funad fit` "
                             f"is scored with `funad predict {self.path} IMAGES... --out DIR`; this takes the "
                             "model.onnx written by `funad export --format onnx`")
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {self.path}")
        options = onnxruntime.SessionOptions()
        # Sleeping idle threads leave the cores to decoding and writing between runs (as the backbone's, docs/speed.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = onnxruntime.InferenceSession(str(path), sess_options=options,
                                                        providers=["CPUExecutionProvider"])
        except _SESSION_ERRORS as error:
            raise ValueError(f"{self.path} is not a readable ONNX model (onnxruntime: {error})") from error
        metadata = self.session.get_modelmeta().custom_metadata_map
        missing = [key for key in (THRESHOLD_KEY, *PREPROCESSING_KEYS[:3]) if key not in metadata]
        if missing:
            raise ValueError(f"{self.path} is not a model written by `funad export` (its metadata lacks "
                             f"{', '.join(missing)})")
        try:
            self.threshold_ = float(metadata[THRESHOLD_KEY])
            # Exports before funad recorded it have no pixel threshold: their images get no defect regions.
            self.pixel_threshold_ = (float(metadata[PIXEL_THRESHOLD_KEY]) if PIXEL_THRESHOLD_KEY in metadata
                                     else math.inf)
            self.map_range: tuple[float, float] | None = (tuple(json.loads(metadata["map_range"]))
                                                          if "map_range" in metadata else None)
            self.preprocessing = preprocessing_from_metadata(metadata, str(self.path))
        except (ValueError, TypeError) as error:  # metadata edited since the export (the version check names it)
            message = str(error)
            raise ValueError(message if message.startswith(str(self.path)) else
                             f"{self.path}: unreadable funad metadata ({message})") from error
        self.input_name = self.session.get_inputs()[0].name
        self.progress = False  # the same attribute as FunAD's; nothing here draws a progress bar

    def run(self, images: Sequence[Image.Image]) -> OnnxResult:
        """Score a batch of 8-bit RGB images (as :func:`funad.data.images.load_image` returns them)."""
        inputs, poses = zip(*(backbone_input(image, self.preprocessing) for image in images))
        batch = np.stack(inputs)
        scores, maps, labels = self.session.run(["score", "anomaly_map", "label"], {self.input_name: batch})
        return OnnxResult(scores, maps, labels.astype(bool), list(poses))

    def predict(self, paths: Iterable[str | Path], map_size: MapSize = "original",
                batch_size: int = BATCH_SIZE, *, keep_images: bool = False) -> Iterator[Prediction]:
        """One :class:`Prediction` per image file, in order, as ``FunAD.predict`` (``keep_images`` too); an
        unreadable file gets its error."""
        files = [Path(path) for path in paths]
        for start in range(0, len(files), batch_size):
            loaded: list[tuple[Path, Image.Image]] = []
            errors: dict[Path, str] = {}
            for path in files[start:start + batch_size]:
                try:
                    loaded.append((path, load_image(path)))
                except ImageLoadError as error:
                    logger.warning("cannot score %s: %s", path, error.reason)
                    errors[path] = error.reason
            result = self.run([image for _, image in loaded]) if loaded else None
            rows = {path: row for row, (path, _) in enumerate(loaded)}
            images = dict(loaded)
            for path in files[start:start + batch_size]:
                if path in errors or result is None:
                    yield Prediction(path, math.nan, None, errors[path])
                    continue
                row = rows[path]
                image = images[path]
                size = self.preprocessing.image_size
                height, width = map_shape(map_size, (image.height, image.width), size)
                top, height_in, left, width_in = content_box(image.width, image.height, size,
                                                             self.preprocessing.keep_aspect)
                covering = result.maps[row][top:top + height_in, left:left + width_in]  # a letterbox's margins cut off
                anomaly_map = map_to_photo(resize_bilinear(covering, height, width), result.poses[row],
                                           (image.width, image.height))
                yield Prediction(path, float(result.scores[row]), anomaly_map, image=image if keep_images else None)

    def label(self, scores: float | Sequence[float] | np.ndarray, threshold: float | None = None) -> np.ndarray:
        """True where a score is above ``threshold`` (default: the model's label-free ``threshold_``)."""
        return above_threshold(scores, self.threshold_ if threshold is None else threshold)

    def defect_regions(self, anomaly_map: np.ndarray,
                       pixel_threshold: float | None = None) -> tuple[np.ndarray, list[Region]]:
        """The defect mask and its connected regions, largest first, as ``FunAD.defect_regions``."""
        from funad.inference.regions import defect_regions  # scipy: only where regions are asked for

        return defect_regions(anomaly_map, self.pixel_threshold_ if pixel_threshold is None else pixel_threshold)

    def heatmap_range(self) -> tuple[float, float]:
        """The colour range ``funad export`` recorded (the fitted model's ``heatmap_range()``)."""
        if self.map_range is None:
            raise ValueError(f"{self.path} records no heatmap colour range: export it again with this funad")
        return self.map_range
