"""The folder `funad predict` writes, read back: scores.csv rows and prediction.json.

``scores.csv`` has one row per input image (path, score, label, threshold, heatmap, map, error;
heatmap and map relative to the folder). An image that could not be read has a NaN score, no
label, heatmap or map, and the reason in ``error``. ``prediction.json`` records the model
directory and the threshold used, so a report can show the model's suspected training images next to the predictions.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

SCORES = "scores.csv"
DESCRIPTION = "prediction.json"
COLUMNS = ["path", "score", "label", "threshold", "heatmap", "map", "error"]
#: Columns every prediction folder has (older ones lack "error").
_REQUIRED = COLUMNS[:-1]


@dataclass
class PredictedImage:
    path: Path
    score: float
    anomalous: bool
    heatmap: Path  # absolute
    anomaly_map: Path  # absolute .npy


@dataclass
class PredictionFolder:
    directory: Path
    images: list[PredictedImage]
    threshold: float
    model_dir: Path | None


def label_name(anomalous: bool) -> str:
    return "anomalous" if anomalous else "normal"


def write_description(directory: Path, model_dir: Path, threshold: float, threshold_source: str) -> None:
    description = {"model": str(model_dir.resolve()), "threshold": threshold, "threshold_source": threshold_source}
    (directory / DESCRIPTION).write_text(json.dumps(description, indent=2))


def read_prediction_folder(directory: Path) -> PredictionFolder:
    scores_path = directory / SCORES
    if not scores_path.is_file():
        raise FileNotFoundError(f"{directory} is not a prediction folder: {SCORES} is missing (run `funad predict`)")
    with open(scores_path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in _REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{scores_path}: columns {missing} are missing (written by an older funad?)")
        # An image predict could not read has an error and nothing to report.
        rows = [row for row in reader if not row.get("error")]
    if not rows:
        raise ValueError(f"{scores_path} lists no images: nothing to report")
    images = [PredictedImage(Path(row["path"]), _number(row, "score", scores_path, line), row["label"] == "anomalous",
                             directory / row["heatmap"], directory / row["map"])
              for line, row in enumerate(rows, start=2)]
    model_dir, threshold = None, _number(rows[0], "threshold", scores_path, 2)
    if (directory / DESCRIPTION).is_file():
        description = json.loads((directory / DESCRIPTION).read_text())
        model_dir, threshold = Path(description["model"]), float(description["threshold"])
    return PredictionFolder(directory, images, threshold, model_dir)


def _number(row: dict, column: str, path: Path, line: int) -> float:
    try:
        return float(row[column])
    except ValueError:
        raise ValueError(f"{path}, line {line}: {column} {row[column]!r} is not a number") from None
