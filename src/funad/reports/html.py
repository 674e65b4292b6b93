"""One self-contained report.html for a prediction folder: opens from disk, no server, no network.

Images are embedded as base64 data URIs (downscaled thumbnails, so a few hundred images stay a
few megabytes). Sections: a summary, metrics (when ground truth is given), the score histogram
with the threshold, the predictions sorted by score as image/heatmap pairs, and the model's
suspected training images (when prediction.json names a model directory that still exists).
"""

from __future__ import annotations

import base64
import heapq
import html
import io
import logging
from array import array
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # not pyplot: no GUI backend, no global figure state

from funad.data.images import ImageLoadError, load_image
from funad.reports.prediction_folder import (
    REPORT,
    PredictedImage,
    PredictionFolder,
    label_name,
    read_prediction_folder,
)
from funad.utils.files import write_text_atomically

logger = logging.getLogger(__name__)

THUMBNAIL_SIZE = 256  # longest side in pixels
# Rows of the predictions table: thumbnails are decoded and embedded per row, so a page of 10 000
# images would take minutes to write and be too heavy to open. The most anomalous come first.
MAX_IMAGES = 200

_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; }
td, th { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: middle; }
tr.anomalous td.label { color: #b00; font-weight: bold; }
td.path { font-family: monospace; font-size: 0.85em; word-break: break-all; max-width: 28em; }
img.thumb { max-width: 256px; max-height: 256px; display: block; }
.missing { color: #b00; }
"""


def _data_uri(png_or_jpeg: bytes, kind: str) -> str:
    return f"data:image/{kind};base64,{base64.b64encode(png_or_jpeg).decode('ascii')}"


def _thumbnail(path: Path) -> str | None:
    """The image downscaled and embedded, or None (with a warning) when it cannot be read."""
    try:
        image = load_image(path)
    except ImageLoadError as error:
        logger.warning("report: cannot embed %s", error)
        return None
    image.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return _data_uri(buffer.getvalue(), "jpeg")


def _missing_cell(path: Path) -> str:
    return f'<td class="missing">missing: {html.escape(str(path))}</td>'


def _image_cell(path: Path, alt: str) -> str:
    uri = _thumbnail(path)
    if uri is None:
        return _missing_cell(path)
    return f'<td><img class="thumb" src="{uri}" alt="{html.escape(alt)}"></td>'


def histogram_png(scores: np.ndarray, threshold: float, training_scores: np.ndarray | None) -> bytes:
    figure = Figure(figsize=(7, 3), dpi=100)
    axes = figure.subplots()
    values = [scores] if training_scores is None else [scores, training_scores]
    bins = np.histogram_bin_edges(np.concatenate(values + [[threshold]]), bins=30).tolist()
    axes.hist(scores, bins=bins, alpha=0.7, label=f"predicted images ({len(scores)})")
    if training_scores is not None:
        axes.hist(training_scores, bins=bins, alpha=0.5, label=f"training images ({len(training_scores)})")
    axes.axvline(threshold, color="red", linestyle="--", label=f"threshold {threshold:.4g}")
    axes.set_xlabel("anomaly score")
    axes.set_ylabel("images")
    axes.legend(fontsize="small")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _training_section(folder: PredictionFolder, train_root: Path | None) -> tuple[str, np.ndarray | None]:
    """The suspected training images (score above the threshold), and all training scores.

    ``train_root``: where the training folder is now, if it has moved since `funad fit`.
    """
    from funad.persistence import ModelFormatError, load_model, model_digest
    from funad.reports.training_images import locate_training_images, rank_training_images

    if folder.model_dir is None:
        return "<p>No model directory recorded (prediction.json missing): training audit not shown.</p>", None
    if folder.model_dir.is_file():
        return (f"<p>Predicted with the exported model {html.escape(str(folder.model_dir))}, which carries no "
                "training images: training audit not shown (report a prediction of the model directory for "
                "it).</p>", None)
    try:
        fitted = load_model(folder.model_dir).state
        if folder.model_digest is not None and model_digest(folder.model_dir) != folder.model_digest:
            raise ModelFormatError(f"the model in {folder.model_dir} is not the one these predictions were made "
                                   "with (fitted again since?)")
        paths, scores = fitted.train_paths, fitted.train_predict_scores
    except ModelFormatError as error:
        logger.warning("report: training audit left out: %s", error)
        return f"<p class=\"missing\">Training audit unavailable: {html.escape(str(error))}</p>", None
    order, count = rank_training_images(scores, folder.threshold)
    suspected = order[:count]
    located = locate_training_images(paths, fitted.train_digests, suspected, train_root)
    rows = "".join(
        f'<tr><td>{rank}</td>{_image_cell(located[i], "training image") if i in located else _missing_cell(paths[i])}'
        f'<td>{scores[i]:.4g}</td>'
        f'<td class="path">{html.escape(str(paths[i]))}</td></tr>'
        for rank, i in enumerate(suspected, start=1))
    section = (f"<p>{len(suspected)} of {len(paths)} training images score above the threshold "
               f"(model {html.escape(str(folder.model_dir))}). Defects among them were in the unlabelled training "
               "data; if they look normal, the threshold is on the low side for your purpose.</p>")
    if suspected:
        section += f"<table><tr><th>#</th><th>image</th><th>score</th><th>path</th></tr>{rows}</table>"
    return section, scores


def render_report(folder: PredictionFolder, metrics: dict[str, float] | None, train_root: Path | None = None,
                  max_images: int = MAX_IMAGES) -> str:
    """The page; its predictions table shows the ``max_images`` highest scores (every score is in the histogram).

    The folder's images are read in one streaming pass that keeps their scores and the ``max_images``
    highest-scoring rows, so a folder of 100 000 images is never all in memory.
    """
    if max_images < 1:  # heapq.nlargest would not even read the folder: a page of 0 images
        raise ValueError(f"max_images must be at least 1, got {max_images}")
    scores, flagged = array("d"), 0

    def tally(images: Iterable[PredictedImage]) -> Iterator[PredictedImage]:
        nonlocal flagged
        for image in images:
            scores.append(image.score)
            flagged += image.anomalous
            yield image

    # Highest first, ties in file order (as a stable sort would give them).
    top = heapq.nlargest(max_images, tally(folder.images()), key=lambda image: image.score)
    training_html, training_scores = _training_section(folder, train_root)
    histogram = histogram_png(np.asarray(scores), folder.threshold, training_scores)
    if metrics:
        metric_rows = "".join(f"<tr><th>{html.escape(name)}</th><td>{value:.3f}</td></tr>"
                              for name, value in metrics.items())
        metrics_html = f"<table>{metric_rows}</table>"
    else:
        metrics_html = "<p>No ground truth given (<code>funad report --ground-truth DIR</code>).</p>"
    prediction_rows = "".join(
        f'<tr class="{label_name(image.anomalous)}"><td>{rank}</td>{_image_cell(image.path, "image")}'
        f'{_image_cell(image.heatmap, "heatmap") if image.heatmap else "<td>not written</td>"}'
        f'<td>{image.score:.4g}</td>'
        f'<td class="label">{label_name(image.anomalous)}</td><td class="path">{html.escape(str(image.path))}</td></tr>'
        for rank, image in enumerate(top, start=1))
    shown = (f"all {len(scores)}" if len(scores) <= max_images else
             f"the {max_images} highest of {len(scores)} (all are in scores.csv; "
             "<code>funad report --max-images N</code> for more)")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>funad report: {html.escape(str(folder.directory))}</title>
<style>{_STYLE}</style></head>
<body>
<h1>funad report</h1>
<p>{len(scores)} images from <code>{html.escape(str(folder.directory))}</code>; {flagged} above the threshold
{folder.threshold:.4g} (labelled anomalous).</p>
<h2>Metrics</h2>
{metrics_html}
<h2>Score distribution</h2>
<img class="histogram" src="{_data_uri(histogram, "png")}" alt="score histogram with the threshold">
<h2>Predictions, highest score first</h2>
<p class="shown">Showing {shown}.</p>
<table><tr><th>#</th><th>image</th><th>heatmap</th><th>score</th><th>label</th><th>path</th></tr>
{prediction_rows}
</table>
<h2>Suspected training images</h2>
{training_html}
</body></html>
"""


def write_report(prediction_dir: Path, ground_truth: Path | None = None, out_path: Path | None = None,
                 train_root: Path | None = None, max_images: int | None = None) -> Path:
    """Write report.html for a `funad predict` folder (into it, unless ``out_path`` is given).

    ``train_root``: the training folder's new place, if it has moved since `funad fit`.
    """
    from funad.reports.ground_truth import evaluate

    folder = read_prediction_folder(Path(prediction_dir))
    metrics = evaluate(folder, Path(ground_truth)) if ground_truth is not None else None
    out_path = Path(out_path) if out_path is not None else folder.directory / REPORT
    out_path.parent.mkdir(parents=True, exist_ok=True)
    rows = MAX_IMAGES if max_images is None else max_images  # not `or`: 0 is refused, not the default
    write_text_atomically(out_path, render_report(folder, metrics, train_root, rows))  # never half a page
    return out_path
