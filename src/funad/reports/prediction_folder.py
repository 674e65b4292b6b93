"""The folder `funad predict` writes, read back: scores.csv rows and prediction.json.

``scores.csv`` has one row per input image (path, score, label, threshold, heatmap, map, error;
path absolute, as the model records its training images, so that a report or ``--resume`` run from
another working folder finds the same images; heatmap and map relative to the folder; either may be
empty when not written). An image that
could not be read has a NaN score, no label, heatmap or map, and the reason in ``error``. Rows
are appended while predict runs, each once the image's files are written (:mod:`.prediction_writer`).
``regions.csv`` has one row per defect region of each anomalous image (its bounding box, area
in pixels and peak score, in the pixels of the map). ``prediction.json`` records the model
directory and digest (``--resume`` continues only with the same model), the folder the output
names are taken relative to (and only with the same one), the thresholds used and how maps are
stored, so a report can show the model's suspected training images next to the predictions and
read the maps back.

Maps are ``.npy`` float32 files, or 16-bit greyscale PNGs scaled by the model's heatmap colour
range ``map_range`` = (low, high) in prediction.json: score = low + value / 65535 * (high - low),
values outside the range clipped to it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

from funad.utils.files import common_folder, write_atomically, write_text_atomically

SCORES = "scores.csv"
DESCRIPTION = "prediction.json"
COLUMNS = ["path", "score", "label", "threshold", "heatmap", "map", "error"]
REGIONS = "regions.csv"
REGION_COLUMNS = ["path", "region", "x", "y", "width", "height", "area", "peak"]
REPORT = "report.html"
#: The folders of per-image files a prediction writes (their names: :func:`output_file`).
OUTPUT_FOLDERS = ("maps", "heatmaps")
_PNG_LEVELS = 65535
#: Columns every prediction folder has (older ones lack "error").
_REQUIRED = COLUMNS[:-1]


@dataclass
class PredictedImage:
    path: Path
    score: float
    anomalous: bool
    heatmap: Path | None  # absolute; None when not written
    anomaly_map: Path | None  # absolute .npy or .png; None when not written


@dataclass
class PredictionFolder:
    directory: Path
    threshold: float
    model_dir: Path | None
    map_range: tuple[float, float] | None = None  # scale of 16-bit PNG maps
    model_digest: str | None = None  # the model's when predict ran (None: not recorded)

    def images(self) -> Iterator[PredictedImage]:
        """The images of scores.csv in its order, read row by row: a folder of 100 000 images is never
        all in memory. Images predict could not read (an ``error``) have nothing to report and are left out."""
        scores_path = self.directory / SCORES
        with open(scores_path, newline="") as handle, _named_if_not_text(scores_path):
            for line, row in enumerate(csv.DictReader(handle), start=2):
                if not row.get("error"):
                    yield PredictedImage(Path(row["path"]), _number(row, "score", scores_path, line),
                                         row["label"] == "anomalous",
                                         self.directory / row["heatmap"] if row["heatmap"] else None,
                                         self.directory / row["map"] if row["map"] else None)

    def read_map(self, path: Path) -> np.ndarray:
        """float32 map from a ``.npy`` or 16-bit ``.png`` map file of this folder."""
        if path.suffix != ".png":
            return np.load(path)
        if self.map_range is None:
            raise ValueError(f"{path}: a PNG map, but {DESCRIPTION} records no map_range to scale it")
        low, high = self.map_range
        with Image.open(path) as image:
            levels = np.asarray(image, dtype=np.float32)
        return (low + levels * np.float32((high - low) / _PNG_LEVELS)).astype(np.float32)


def output_names(paths: list[Path]) -> list[Path]:
    """Relative output names that keep every input apart: the full file name, under its folders.

    Paths are taken relative to their deepest common folder, so ``a/x.png`` and ``b/x.png``
    stay ``a/x.png`` and ``b/x.png``; the suffix stays in the name, so ``x.png`` and ``x.jpg``
    stay apart too (``maps/x.png.npy``, ``maps/x.jpg.npy``).
    """
    resolved = [p.resolve() for p in paths]
    if not resolved:
        return []
    common = common_folder(resolved)
    return [p.relative_to(common) for p in resolved]


def input_folder(path: Path, name: Path) -> str:
    """The folder :func:`output_names` names the inputs relative to, from one input ``path`` and its ``name``:
    a resumed run must share it, or two images of the two runs could be given one output name."""
    return str(path.resolve().parents[len(name.parts) - 1])


def output_file(folder: str, name: Path, suffix: str) -> Path:
    """``folder/<name><suffix>``: the suffix is added to the full name (``part.png`` -> ``part.png.npy``)."""
    return Path(folder) / name.with_name(name.name + suffix)


def label_name(anomalous: bool) -> str:
    return "anomalous" if anomalous else "normal"


def score_row(path: Path, score: float, threshold: float, anomalous: bool | None, heatmap: str = "",
              anomaly_map: str = "", error: str | None = None) -> list[str]:
    """``path``'s scores.csv row (:data:`COLUMNS`); an image that could not be read has a NaN ``score``,
    no label (``anomalous`` None) and why in ``error``. ``heatmap``, ``anomaly_map``: relative to the folder."""
    label = "" if anomalous is None else label_name(anomalous)
    return [row_path(path), f"{score:.6g}", label, f"{threshold:.9g}", heatmap, anomaly_map, error or ""]


def row_path(path: Path | str) -> str:
    """How scores.csv names an image: its absolute path (symbolic links kept, as in the model's
    training paths)."""
    return os.path.abspath(path)


def image_key(path: Path | str) -> str:
    """What ``--resume`` matches a scores.csv row and an input by: the file itself, whichever links lead to it
    (rows written as a relative path by earlier versions read relative to the working folder)."""
    return os.path.realpath(path)


def prediction_description(model_dir: Path, model_digest: str, threshold: float, threshold_source: str,
                           **details: Any) -> dict[str, Any]:
    """What prediction.json records: the model (directory and content digest), the thresholds, and
    ``details`` (the pixel threshold, map format, size and range, ...), as JSON reads it back."""
    description = {"model": str(model_dir.resolve()), "model_digest": model_digest, "threshold": threshold,
                   "threshold_source": threshold_source, **details}
    return json.loads(json.dumps(description))  # tuples as lists: comparable with a file read back


def write_description(directory: Path, description: dict[str, Any]) -> None:
    write_text_atomically(directory / DESCRIPTION, json.dumps(description, indent=2))


def check_no_earlier_prediction(directory: Path, *, overwrite: bool, resumable: bool = True) -> None:
    """Refuse a ``directory`` that holds an earlier prediction (its scores.csv or prediction.json), unless
    ``overwrite`` (then :func:`remove_earlier_prediction` makes way); ``resumable``: the command has --resume.

    Writing over it in place would replace scores.csv but leave the earlier run's maps and heatmaps beside
    the new ones, for a report to show as if they were this run's.
    """
    if not overwrite and holds_prediction(directory):
        resume = "pass --resume to continue it, " if resumable else ""
        raise FileExistsError(f"{directory} holds an earlier prediction ({SCORES}): {resume}pass --overwrite to "
                              "replace it, or choose another --out")


def check_some_image_read(scored: int, failed: int, scores: Path) -> None:
    """A ValueError when every input image failed: a run that scored nothing did not succeed."""
    if failed and not scored:
        raise ValueError(f"none of the {failed} input images could be read: see the error column of {scores}")


def holds_prediction(directory: Path) -> bool:
    """Whether ``directory`` holds what a `funad predict` wrote (its scores.csv or prediction.json)."""
    return any((directory / name).exists() for name in (SCORES, DESCRIPTION))


def remove_earlier_prediction(directory: Path) -> None:
    """Remove what a `funad predict` wrote into ``directory``, if it holds a prediction: its files and folders
    only, nothing else there (a folder of the user's own named maps/ beside no prediction stays)."""
    if not holds_prediction(directory):
        return
    for name in (SCORES, REGIONS, DESCRIPTION, REPORT):
        (directory / name).unlink(missing_ok=True)
    for folder in OUTPUT_FOLDERS:
        shutil.rmtree(directory / folder, ignore_errors=True)


def resume_folder(directory: Path, description: dict[str, Any]) -> set[str]:
    """The paths an earlier `funad predict` into ``directory`` finished, to be skipped by ``--resume``.

    Refuses a folder written by another model or with other settings (``description`` is this
    run's). Repairs what a run killed mid-write leaves: a torn last line, and regions rows of an
    image whose score row was never written (it is predicted again). Reads the files streaming.
    An empty or new ``directory`` has nothing to skip.
    """
    scores_path, description_path = directory / SCORES, directory / DESCRIPTION
    if not scores_path.is_file():
        return set()
    if not description_path.is_file():
        raise ValueError(f"{directory}: {SCORES} but no {DESCRIPTION}, so which model wrote it is unknown: "
                         "cannot resume; choose another --out, or pass --overwrite instead of --resume to replace it")
    recorded = read_description(description_path)
    # A folder written before input_folder was recorded resumes as it did then (its names are the same).
    keys = (recorded.keys() | description.keys()) - ({"input_folder"} - recorded.keys())
    differing = sorted(key for key in keys if recorded.get(key) != description.get(key))
    if differing:
        raise ValueError(f"{description_path}: written by a different model or settings (differing: "
                         f"{', '.join(differing)}): cannot resume; choose another --out, or pass --overwrite "
                         "instead of --resume to replace it")
    for path in (scores_path, directory / REGIONS):
        _cut_torn_line(path)
    with open(scores_path, newline="") as handle:
        rows = csv.reader(handle)
        if next(rows, None) not in (None, COLUMNS):  # None: killed before its header
            raise ValueError(f"{scores_path}: the header is not {','.join(COLUMNS)}: cannot resume into it")
        done = {image_key(row[0]) for row in rows}
    _keep_region_rows(directory / REGIONS, done)
    return done


def _cut_torn_line(path: Path, block: int = 1 << 16) -> None:
    """Truncate ``path`` after its last newline: what follows is a row a killed run did not finish."""
    if not path.is_file():
        return
    with open(path, "rb+") as handle:
        end = position = handle.seek(0, os.SEEK_END)
        while position > 0:
            start = max(0, position - block)
            handle.seek(start)
            newline = handle.read(position - start).rfind(b"\n")
            if newline >= 0:
                if start + newline + 1 < end:
                    handle.truncate(start + newline + 1)
                return
            position = start
        handle.truncate(0)


def _keep_region_rows(path: Path, done: set[str]) -> None:
    """Rewrite regions.csv, streaming, without the rows of images not in ``done``."""
    if not path.is_file():
        return

    def copy(out: BinaryIO) -> None:
        text = io.TextIOWrapper(out, newline="")
        writer = csv.writer(text)
        with open(path, newline="") as source:
            for number, row in enumerate(csv.reader(source)):
                if number == 0 or image_key(row[0]) in done:
                    writer.writerow(row)
        text.flush()
        text.detach()  # the file is write_atomically's to close

    write_atomically(path, copy)


def map_levels(anomaly_map: np.ndarray, value_range: tuple[float, float], top: int) -> np.ndarray:
    """float32 ``anomaly_map`` scaled from ``value_range`` to 0..``top``, clipped.

    In place on one copy: a 24-megapixel map is 96 MB, and each chained operation would take another.
    """
    low, high = value_range
    levels = anomaly_map - np.float32(low)
    levels *= np.float32(top / max(high - low, 1e-12))
    return np.clip(levels, 0, top, out=levels)


def write_map(path: Path, anomaly_map: np.ndarray, value_range: tuple[float, float]) -> None:
    """``anomaly_map`` as ``.npy`` float32 or, for a ``.png`` path, 16 bits over ``value_range``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix != ".png":
        write_atomically(path, lambda handle: np.save(handle, anomaly_map))
        return
    levels = map_levels(anomaly_map, value_range, _PNG_LEVELS)
    picture = Image.fromarray(np.rint(levels, out=levels).astype(np.uint16))
    write_atomically(path, lambda handle: picture.save(handle, format="PNG"))


def read_description(path: Path) -> dict[str, Any]:
    """prediction.json's object, or a ValueError naming the file when it is not one `funad predict` wrote
    (cut, emptied, edited): a model, a numeric threshold and, if any, a map range of two numbers."""
    try:
        description = json.loads(path.read_text())
        if not isinstance(description, dict):
            raise ValueError("not a JSON object")
        if "model" not in description:
            raise ValueError("no model recorded")
        float(description["threshold"])
        map_range = description.get("map_range")
        if map_range and len(list(map(float, map_range))) != 2:
            raise ValueError("map_range is not two numbers")
    except (ValueError, TypeError, KeyError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        problem = f"no {error}" if isinstance(error, KeyError) else str(error)
        raise ValueError(f"{path}: not a prediction description that `funad predict` wrote ({problem}); "
                         "predict again into a new --out") from error
    return description


def read_prediction_folder(directory: Path) -> PredictionFolder:
    """The folder's description; its images are read when :meth:`PredictionFolder.images` is iterated."""
    scores_path = directory / SCORES
    if not scores_path.is_file():
        raise FileNotFoundError(f"{directory} is not a prediction folder: {SCORES} is missing (run `funad predict`)")
    with open(scores_path, newline="") as handle, _named_if_not_text(scores_path):
        reader = csv.DictReader(handle)
        missing = [c for c in _REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{scores_path}: columns {missing} are missing (written by an older funad?)")
        first = next((row for row in reader if not row.get("error")), None)
        if first is None:
            raise ValueError(f"{scores_path} lists no images: nothing to report")
        folder = PredictionFolder(directory, _number(first, "threshold", scores_path, reader.line_num), None)
    if (directory / DESCRIPTION).is_file():
        description = read_description(directory / DESCRIPTION)
        folder.model_dir, folder.threshold = Path(description["model"]), float(description["threshold"])
        folder.model_digest = description.get("model_digest")
        if description.get("map_range"):
            folder.map_range = (float(description["map_range"][0]), float(description["map_range"][1]))
    return folder


@contextlib.contextmanager
def _named_if_not_text(path: Path) -> Iterator[None]:
    """A ValueError naming ``path`` for bytes that are not UTF-8 text (Python's own names no file)."""
    try:
        yield
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not a UTF-8 text file ({error.reason} at byte {error.start})") from error


def _number(row: dict, column: str, path: Path, line: int) -> float:
    if row.get(column) is None:  # csv gives None for the columns of a row cut short
        raise ValueError(f"{path}, line {line}: the row is cut short (no {column})")
    try:
        return float(row[column])
    except ValueError:
        raise ValueError(f"{path}, line {line}: {column} {row[column]!r} is not a number") from None
