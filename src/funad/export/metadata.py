"""The metadata `funad export` writes into an ONNX model: torch-free, for the runtime that reads it."""

from __future__ import annotations

import json
from collections.abc import Mapping

from funad.data.preprocessing import Preprocessing

#: The label-free image threshold the graph's ``label`` output applies.
THRESHOLD_KEY = "threshold"
#: The threshold that outlines defect regions in an anomalous image's map.
PIXEL_THRESHOLD_KEY = "pixel_threshold"
#: The entries :func:`preprocessing_metadata` writes; the first three are in every export.
PREPROCESSING_KEYS = ("image_size", "mean", "std", "keep_aspect", "align_object")


def preprocessing_metadata(preprocessing: Preprocessing) -> dict[str, str]:
    """How the graph's input is made from an image, as metadata strings (:func:`preprocessing_from_metadata`)."""
    return {"image_size": str(preprocessing.image_size), "mean": json.dumps(list(preprocessing.mean)),
            "std": json.dumps(list(preprocessing.std)), "keep_aspect": json.dumps(preprocessing.keep_aspect),
            "align_object": json.dumps(preprocessing.align_object)}


def preprocessing_from_metadata(metadata: Mapping[str, str]) -> Preprocessing:
    """The :class:`Preprocessing` an export recorded; exports from before ``keep_aspect`` and ``align_object``
    stretched and did not turn."""
    return Preprocessing(int(metadata["image_size"]), tuple(json.loads(metadata["mean"])),
                         tuple(json.loads(metadata["std"])), bool(json.loads(metadata.get("keep_aspect", "false"))),
                         bool(json.loads(metadata.get("align_object", "false"))))
