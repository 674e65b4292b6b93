"""Run every method on every split from one feature extraction, and evaluate them the same way.

Each image's features are extracted once (and cached), then FUN-AD, FUN-AD*, PatchCore and
SoftPatch are fitted on the same training features of a split and score the same test features.
Maps are made identically for all methods (bilinear upsampling, Gaussian sigma ``map_sigma``),
resized to each mask's resolution and streamed into the pixel metrics image by image.
Fit times exclude feature extraction (timed once, separately); FUN-AD*'s includes writing and
extracting its synthetic images, and FUN-AD's the turned training images its default scorer
vouches with (corroboration across poses; cached, so only a split's first fit pays for them):
both are part of their cost.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from funad.baselines import PatchCore, SoftPatch
from funad.benchmark.datasets import Sample
from funad.benchmark.options import METHODS, BenchmarkOptions
from funad.benchmark.protocol import Split
from funad.config import POOL_MAX_PATCHES
from funad.data.images import image_size, load_image
from funad.features.containers import FeatureSet
from funad.inference.scorers.base import PatchScorer
from funad.inference.scoring import score_images
from funad.method.threshold import above_threshold
from funad.metrics import PixelMetrics, f1_max, image_auroc, threshold_metrics
from funad.model import FunAD
from funad.utils.masks import read_mask
from funad.utils.pose import estimate_pose

logger = logging.getLogger(__name__)

SCORING_BATCH = 16


def _ground_truth(sample: Sample) -> np.ndarray:
    """Boolean mask at the mask's (= the image's) resolution; all False for a normal image."""
    if sample.mask is None:
        return np.zeros(image_size(sample.path), dtype=bool)
    return read_mask(sample.mask)


class Evaluator:
    """Scores a split's test images with one method and computes every metric for each setting."""

    def __init__(self, split: Split, settings: tuple[str, ...], features: FeatureSet,
                 model: FunAD, pixels: bool):
        self.settings = {s: split.test_set(s) for s in settings}
        # Each test image once, even when it belongs to both settings' test sets.
        self.samples = list({sample.path: sample for test in self.settings.values() for sample in test}.values())
        self.features = features.subset([sample.path for sample in self.samples])
        self.grid, self.size = features.grid, model.backbone.preprocessing.image_size
        self.keep_aspect = model.backbone.preprocessing.keep_aspect
        self.align_object = model.backbone.preprocessing.align_object
        self._turns: dict[Path, dict[str, Any]] = {}
        self.sigma = model.config.map_sigma
        self.pixels = pixels

    def _turned_from(self, sample: Sample) -> dict[str, Any]:
        """``ScoredImages.anomaly_map``'s ``pose`` and ``image_shape`` for a test image turned before extraction,
        read once per image however many methods the split evaluates."""
        if not self.align_object:
            return {}
        if sample.path not in self._turns:
            image = load_image(sample.path)
            self._turns[sample.path] = {"pose": estimate_pose(image), "image_shape": (image.height, image.width)}
        return self._turns[sample.path]

    def evaluate(self, scorer: PatchScorer,
                 threshold: float | None = None) -> tuple[dict[str, dict[str, float]], float]:
        """Metrics per setting (with a label-free ``threshold``, how its labels fare), and the seconds spent scoring
        and mapping (not evaluating)."""
        pixel_metrics = {s: PixelMetrics() for s in self.settings}
        members = {s: {sample.path for sample in test} for s, test in self.settings.items()}
        image_scores: dict[Path, float] = {}
        seconds = 0.0
        method_features = self.features.method_features("patch")
        for start in range(0, len(self.samples), SCORING_BATCH):
            batch = self.samples[start:start + SCORING_BATCH]
            started = time.perf_counter()
            scored = score_images(scorer, method_features.take(range(start, start + len(batch))), self.grid,
                                  self.size, self.sigma, self.keep_aspect)
            seconds += time.perf_counter() - started
            for row, sample in enumerate(batch):
                image_scores[sample.path] = float(scored.scores[row])
                # Unlabelled pixels (an anomaly without a mask) cannot be scored pixel by pixel.
                if not self.pixels or (sample.label and sample.mask is None):
                    continue
                truth = _ground_truth(sample)
                anomaly_map = scored.anomaly_map(row, *truth.shape, **self._turned_from(sample))
                for setting, paths in members.items():
                    if sample.path in paths:
                        pixel_metrics[setting].update(anomaly_map, truth)
        results = {}
        for setting, test in self.settings.items():
            labels = [s.label for s in test]
            scores = [image_scores[s.path] for s in test]
            results[setting] = {"image_auroc": image_auroc(labels, scores), "image_f1_max": f1_max(labels, scores)[0]}
            if threshold is not None:
                labelled = threshold_metrics(labels, above_threshold(scores, threshold))
                results[setting].update(label_recall=labelled["recall"],
                                        label_false_alarm_rate=labelled["false_alarm_rate"])
            if self.pixels:
                results[setting].update(pixel_auroc=pixel_metrics[setting].pixel_auroc(),
                                        aupro=pixel_metrics[setting].aupro())
        return results, seconds


def _fit_method(method: str, split: Split, train: FeatureSet, options: BenchmarkOptions,
                peer_pool_cap: int | None) -> tuple[PatchScorer, float | None]:
    """The method's fitted scorer, and its label-free threshold (funad's; None for the peers, whose coreset pools
    hold at most ``peer_pool_cap`` patches)."""
    seed = split.seed
    if method in ("funad", "funad*"):
        config = {**options.funad_config, "seed": seed}
        if method == "funad*":
            config["synthetic_ratio"] = options.peers.funad_star_ratio
        model = FunAD(cache_dir=options.cache_dir, progress=options.progress, **config)
        if model.config.synthetic_ratio > 0:
            features, num_synthetic = model.extract_training_set(train.paths)
            model.fit_features(features, num_synthetic=num_synthetic)
        else:
            model.fit_features(train)
        return model.scorer_, model.threshold_
    patches, peers = train.method_features("patch"), options.peers
    if method == "patchcore":
        return PatchCore(peers.coreset_fraction, reweight=peers.patchcore_reweight, seed=seed,
                         pool_max_patches=peer_pool_cap).fit(patches), None
    if method == "softpatch":
        return SoftPatch(peers.softpatch_noise, peers.coreset_fraction, seed=seed,
                         pool_max_patches=peer_pool_cap).fit(patches), None
    raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")


def run_benchmark(splits: list[Split], options: BenchmarkOptions, pixels: bool,
                  on_split_done: Callable[[dict], None] | None = None) -> dict:
    """Fit and evaluate every method on every split; the per-run records and the extraction time.

    ``on_split_done`` gets the outcome so far after each split, so a long run that is stopped
    still leaves its finished splits behind.
    """
    if options.funad_config.get("level", "patch") != "patch":
        raise ValueError("the benchmark evaluates anomaly maps: it needs level 'patch'")
    extractor = FunAD(cache_dir=options.cache_dir, progress=options.progress, **options.funad_config)
    train_paths = list(dict.fromkeys(p for s in splits for p in s.train))
    # aspect and align "auto" choose once, from every split's training images, so that all fits share the features.
    extractor.choose_preprocessing(train_paths)
    options = dataclasses.replace(options, funad_config={**options.funad_config,
                                                         **extractor.resolved_preprocessing()})
    peer_pool_cap = extractor.pool_cap(POOL_MAX_PATCHES)  # the peers' pools scaled as funad's is
    input_side = extractor.backbone.preprocessing.image_size
    paths = list(dict.fromkeys(train_paths + [t.path for s in splits for t in s.test]))
    started = time.perf_counter()
    features = extractor.extract(paths, description="benchmark features")
    extract_seconds = time.perf_counter() - started
    if features.failures:
        path, reason = next(iter(features.failures.items()))
        raise ValueError(f"{len(features.failures)} benchmark images could not be read (first: {path}: {reason})")
    runs = []
    for split in splits:
        evaluator = Evaluator(split, options.settings, features, extractor, pixels)
        train = features.subset(split.train)
        for method in options.methods:
            logger.info("%s: ratio %g, seed %d: fitting %s", split.category, split.ratio, split.seed, method)
            started = time.perf_counter()
            scorer, threshold = _fit_method(method, split, train, options, peer_pool_cap)
            fit_seconds = time.perf_counter() - started
            results, predict_seconds = evaluator.evaluate(scorer, threshold)
            for setting, metrics in results.items():
                runs.append({"method": method, "ratio": split.ratio, "seed": split.seed, "setting": setting,
                             **metrics, "fit_seconds": fit_seconds, "predict_seconds": predict_seconds,
                             "num_train": len(split.train), "num_moved": int(sum(split.moved)),
                             "num_test": len(split.test_set(setting))})
        if on_split_done is not None:
            on_split_done(_outcome(runs, extract_seconds, len(paths), options, input_side))
    return _outcome(runs, extract_seconds, len(paths), options, input_side)


def _outcome(runs: list[dict], extract_seconds: float, num_images: int, options: BenchmarkOptions,
             image_size: int) -> dict:
    return {"runs": runs, "extract_seconds": extract_seconds, "num_images": num_images, "image_size": image_size,
            "aspect": options.funad_config["aspect"], "align": options.funad_config["align"]}
