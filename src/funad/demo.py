"""`funad demo`: a small contaminated dataset from real photos, fitted and evaluated end to end."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import numpy as np

from funad.data.synthetic import make_demo_dataset
from funad.metrics import PixelMetrics, image_auroc
from funad.model import FunAD
from funad.utils.masks import read_mask

logger = logging.getLogger(__name__)

#: Marks ``--out`` as the demo's own working folder, whose data/ and model/ a rerun may replace.
MARKER = ".funad-demo"
#: What the demo writes in ``--out`` (and replaces on a rerun).
OWN_FOLDERS = ("data", "model")


def claim_working_folder(out: Path) -> None:
    """Make ``out`` the demo's working folder, refusing one whose data/ or model/ the demo did not write.

    The marker is written before anything else, so a run interrupted half-way still leaves a folder
    that the next run may replace.
    """
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    if not (out / MARKER).is_file():
        for name in OWN_FOLDERS:
            if (out / name).exists():
                raise ValueError(f"{out / name} already exists and {out} has no {MARKER}, so it is not known to be "
                                 "`funad demo`'s (demo folders made before funad marked them have none): the demo "
                                 "would replace it; move it away, delete it if it is an old demo's, or choose "
                                 "another --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by `funad demo`: a rerun replaces data/ and model/ here\n")


def run_demo(out: Path, *, seed: int = 0, progress: bool = True, **params) -> dict:
    """Build the dataset under ``out/data``, fit, predict the test set, print image and pixel AUROC.

    ``out`` must be new or the demo's own folder from an earlier run (:func:`claim_working_folder`).
    """
    claim_working_folder(out)
    data_root = out / "data"
    if data_root.exists():
        shutil.rmtree(data_root)
    dataset = make_demo_dataset(data_root, seed=seed)
    print(f"demo data: {len(list(dataset.train_dir.glob('*.png')))} unlabelled training images "
          f"({len(dataset.train_anomalous)} of them defective), {len(dataset.test_paths)} test images")
    started = time.perf_counter()
    model = FunAD(progress=progress, seed=seed, cache_dir=False, **params).fit(dataset.train_dir)
    fit_seconds = time.perf_counter() - started
    model.save(out / "model", overwrite=True)  # the working folder is the demo's own (claimed above)

    started = time.perf_counter()
    scores, pixels = [], PixelMetrics()
    for path, prediction in zip(dataset.test_paths, model.predict(dataset.test_paths)):
        scores.append(prediction.score)
        mask_path = dataset.test_masks.get(path)
        mask = read_mask(mask_path) if mask_path else None
        assert prediction.anomaly_map is not None  # the demo's own images always read
        pixels.update(prediction.anomaly_map, mask)
    predict_seconds = time.perf_counter() - started
    result = {
        "image_auroc": image_auroc(np.asarray(dataset.test_labels), np.asarray(scores)),
        "pixel_auroc": pixels.pixel_auroc(),
        "fit_seconds": fit_seconds,
        "predict_seconds": predict_seconds,
    }
    print(f"image AUROC {result['image_auroc']:.3f}   pixel AUROC {result['pixel_auroc']:.3f}   "
          f"fit {fit_seconds:.1f} s   predict {predict_seconds:.1f} s   model: {out / 'model'}")
    print(f"next: the scores, maps, heatmaps and an HTML report of the test images, with their ground truth:\n"
          f"  funad predict {out / 'model'} {dataset.test_dir} --out {out / 'pred'} --report\n"
          f"  funad report {out / 'pred'} --ground-truth {data_root / 'ground_truth'}\n"
          f"and which training images the model finds defective: funad audit {out / 'model'} --out {out / 'audit'}")
    return result
