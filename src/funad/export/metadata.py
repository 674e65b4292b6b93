"""The metadata `funad export` writes into an ONNX model: torch-free, for the runtime that reads it."""

from __future__ import annotations

import json
from collections.abc import Mapping

from funad.data.preprocessing import Preprocessing
from funad.utils.pose import POSE_VERSION

#: The label-free image threshold the graph's ``label`` output applies.
THRESHOLD_KEY = "threshold"
#: The threshold that outlines defect regions in an anomalous image's map.
PIXEL_THRESHOLD_KEY = "pixel_threshold"
#: The entries :func:`preprocessing_metadata` writes; the first three are in every export, the last only in exports
#: that turn photos (the version of the pose estimate their features were turned by).
PREPROCESSING_KEYS = ("image_size", "mean", "std", "keep_aspect", "align_object", "pose_version")


def preprocessing_metadata(preprocessing: Preprocessing) -> dict[str, str]:
    """How the graph's input is made from an image, as metadata strings (:func:`preprocessing_from_metadata`)."""
    pose = {"pose_version": str(POSE_VERSION)} if preprocessing.align_object else {}
    return {"image_size": str(preprocessing.image_size), "mean": json.dumps(list(preprocessing.mean)),
            "std": json.dumps(list(preprocessing.std)), "keep_aspect": json.dumps(preprocessing.keep_aspect),
            "align_object": json.dumps(preprocessing.align_object), **pose}


def preprocessing_from_metadata(metadata: Mapping[str, str], source: str) -> Preprocessing:
    """The :class:`Preprocessing` the export ``source`` recorded; exports from before ``keep_aspect`` and
    ``align_object`` stretched and did not turn, those from before ``pose_version`` turned by version 1.

    An export whose photos were turned by another version of the pose estimate than this funad's is refused: its
    graph learned from photos turned another way.
    """
    align_object = bool(json.loads(metadata.get("align_object", "false")))
    pose_version = int(metadata.get("pose_version", "1"))
    if align_object and pose_version != POSE_VERSION:
        raise ValueError(f"{source}: exported with version {pose_version} of the pose estimate, this funad turns "
                         f"photos by version {POSE_VERSION}; export the model again with this funad")
    return Preprocessing(int(metadata["image_size"]), tuple(json.loads(metadata["mean"])),
                         tuple(json.loads(metadata["std"])), bool(json.loads(metadata.get("keep_aspect", "false"))),
                         align_object)
