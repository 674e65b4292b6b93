"""A prediction folder written while predict runs: each image's files in a thread pool, its rows once done.

The backbone of the next batches runs while the heatmaps and maps of the last ones are encoded
and written (PNG encoding and fsync release the GIL). Rows reach ``scores.csv`` and
``regions.csv`` in input order, each flushed once the image's files are on disk, so a killed run
keeps every image it finished and ``funad predict --resume`` carries on from there.
"""

from __future__ import annotations

import contextlib
import csv
import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from funad.reports.prediction_folder import (
    COLUMNS,
    REGION_COLUMNS,
    REGIONS,
    SCORES,
    output_file,
    row_path,
    score_row,
    write_map,
)

if TYPE_CHECKING:
    from funad.inference.prediction import Prediction
    from funad.model import FunAD
    from funad.runtime import OnnxModel

#: How far predict may run ahead of the writer: a few images, and at most this many bytes of maps
#: and images (a 24-megapixel map is 96 MB, its image 72 MB).
MAX_PENDING = 8
MAX_PENDING_BYTES = 256 << 20


@dataclass
class ImageRows:
    """What one image adds to the folder once its files are written."""

    score: list  # its scores.csv row
    regions: list[list] = field(default_factory=list)  # its regions.csv rows
    anomalous: bool = False


@dataclass
class ImageOutputs:
    """Writes one image's map and heatmap and returns its rows; runs in the writer's threads. The same for
    `funad predict` and the torch-free runtime, which writes neither heatmaps (matplotlib) nor regions (scipy)."""

    model: FunAD | OnnxModel
    out: Path
    names: dict[Path, Path]  # input path -> output name
    threshold: float
    colour_range: tuple[float, float]  # scales PNG maps and heatmaps
    maps: str  # npy | png | none
    heatmap_suffix: str | None  # .png | .jpg; None: no heatmaps
    regions: bool = True  # defect regions of each anomalous image into regions.csv

    def __call__(self, path: Path, prediction: Prediction) -> ImageRows:
        if prediction.anomaly_map is None:  # unreadable: a row that says why, no map
            return ImageRows(score_row(path, prediction.score, self.threshold, None, error=prediction.error))
        is_anomalous = bool(self.model.label(prediction.score, self.threshold))
        mask, region_rows = None, []
        if is_anomalous and self.regions:
            mask, regions = self.model.defect_regions(prediction.anomaly_map)
            region_rows = [[row_path(path), number, region.x, region.y, region.width, region.height, region.area,
                            f"{region.peak:.6g}"] for number, region in enumerate(regions, start=1)]
        map_name = heatmap_name = ""
        if self.maps != "none":
            map_name = output_file("maps", self.names[path], "." + self.maps).as_posix()
            write_map(self.out / map_name, prediction.anomaly_map, self.colour_range)
        if self.heatmap_suffix:
            from funad.reports.heatmaps import save_overlay  # matplotlib: only where heatmaps are drawn

            assert prediction.image is not None, "predict keeps the decoded images when heatmaps are written"
            heatmap_name = output_file("heatmaps", self.names[path], self.heatmap_suffix).as_posix()
            save_overlay(prediction.image, prediction.anomaly_map, self.out / heatmap_name, self.colour_range, mask)
        return ImageRows(score_row(path, prediction.score, self.threshold, is_anomalous, heatmap_name, map_name),
                         region_rows, is_anomalous)


def held_bytes(prediction: Prediction) -> int:
    """The memory a prediction holds until its files are written: its map and its decoded image."""
    image = prediction.image
    map_bytes = 0 if prediction.anomaly_map is None else prediction.anomaly_map.nbytes
    return map_bytes + (0 if image is None else image.width * image.height * len(image.getbands()))


class PredictionWriter:
    """Runs ``submit``-ted jobs (write one image's files, return its :class:`ImageRows`) on ``threads``
    threads and appends their rows in submission order.

    At most ``max_pending`` jobs, holding at most ``max_pending_bytes`` of maps, wait at a time:
    beyond that ``submit`` waits for the oldest, so predict runs at most that far ahead of the disk.
    ``append``: add to the CSV files of an earlier run (``--resume``) instead of starting them anew.
    ``regions``: write regions.csv (False for a writer whose images have no regions: a file of no rows
    would read as "no defect found").
    """

    def __init__(self, directory: Path, *, append: bool, threads: int, max_pending: int,
                 max_pending_bytes: int, regions: bool = True) -> None:
        mode = "a" if append else "w"
        # Open for the writer's life; close() closes them (the writer is the context manager).
        self._scores_file = open(directory / SCORES, mode, newline="")  # noqa: SIM115
        self._regions_file = open(directory / REGIONS if regions else os.devnull, mode, newline="")  # noqa: SIM115
        self._scores, self._regions = csv.writer(self._scores_file), csv.writer(self._regions_file)
        if self._scores_file.tell() == 0:  # new, or a resumed run that was killed before its header
            self._scores.writerow(COLUMNS)
        if regions and self._regions_file.tell() == 0:
            self._regions.writerow(REGION_COLUMNS)
        self._flush()
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="funad-writer",
                                        initializer=_yield_to_the_backbone)
        self._pending: deque[tuple[Future[ImageRows], int]] = deque()
        self._pending_bytes = 0
        self._max_pending, self._max_pending_bytes = max_pending, max_pending_bytes
        self.written = self.anomalous = self.failed = 0

    def submit(self, job: Callable[[], ImageRows], size_bytes: int) -> None:
        """Queue ``job``, whose inputs take ``size_bytes`` of memory until it has run."""
        self._pending.append((self._pool.submit(job), size_bytes))
        self._pending_bytes += size_bytes
        while len(self._pending) > 1 and (len(self._pending) > self._max_pending
                                          or self._pending_bytes > self._max_pending_bytes):
            self._commit_oldest()
        while self._pending and self._pending[0][0].done():
            self._commit_oldest()

    def _commit_oldest(self) -> None:
        future, size_bytes = self._pending.popleft()
        self._pending_bytes -= size_bytes
        rows = future.result()  # waits; a job's error (a full disk) stops the run here
        # Regions first: an image with its score row is complete; one without is redone by --resume,
        # which drops the regions rows of images that have no score row.
        self._regions.writerows(rows.regions)
        self._scores.writerow(rows.score)
        self._flush()
        failed = bool(rows.score[COLUMNS.index("error")])
        self.written += not failed
        self.failed += failed
        self.anomalous += rows.anomalous

    def _flush(self) -> None:
        self._regions_file.flush()
        self._scores_file.flush()

    def close(self) -> None:
        """Wait for every queued job and write its rows (also on an error or Ctrl-C: finished work is kept)."""
        try:
            while self._pending:
                self._commit_oldest()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._scores_file.close()
            self._regions_file.close()

    def __enter__(self) -> PredictionWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


#: How much lower the writer threads' scheduling priority is than the backbone's (Linux ``nice``, at most 19).
WRITER_NICENESS = 10


def _yield_to_the_backbone() -> None:
    """Lower this writer thread's priority, so that the backbone's threads get the cores first and the
    outputs are written in the gaps (decoding, scoring); the bounded queue stops predict running ahead."""
    # Not Linux, or not allowed: the same priority as the backbone, as before.
    with contextlib.suppress(AttributeError, OSError):
        thread = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + WRITER_NICENESS))
