"""The user-facing estimator: ``FunAD(...).fit(folder)``, then ``score`` / ``anomaly_maps`` / ``predict`` / ``save``."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from funad.config import FunADConfig
from funad.data.images import (
    ImageInput,
    ImageLoadError,
    ImageSource,
    SkippedImage,
    check_images,
    discover_images,
    gather_images,
    image_size,
    load_image,
)
from funad.features.backbones import Backbone, create_backbone
from funad.features.cache import FeatureCache, default_cache_dir
from funad.features.containers import FeatureSet
from funad.features.extraction import extract_features_sharded, iterate_features, place_backbone, resolve_device
from funad.fitted_state import FittedState
from funad.inference.patch_bank import scaled_pool_cap
from funad.inference.prediction import MapSize, Prediction, check_map_size, map_shape
from funad.inference.regions import Region, defect_regions, training_pixel_threshold
from funad.inference.scorers.base import PatchScorer
from funad.inference.scorers.registry import create_scorer, training_views
from funad.inference.scoring import score_images
from funad.method.checkpoint import TrainingCheckpoint, broadcast_state, training_identity
from funad.method.threshold import above_threshold, estimate_threshold
from funad.method.trainer import Trainer, TrainingState, make_state
from funad.persistence import MANIFEST, ModelFormatError, load_model, save_model
from funad.utils import distributed
from funad.utils.files import file_digest
from funad.utils.letterbox import cells_shown, content_box, kept_aspect_side, shapes_differ
from funad.utils.pose import POSE_SAMPLE, ObjectPose, estimate_pose, objects_elongated
from funad.utils.shares import share_count

logger = logging.getLogger(__name__)

# Pseudo-labelling needs a bank from other images and at least two images per batch; below
# this many images the min-max statistics of the method are meaningless.
MIN_TRAINING_IMAGES = 8
#: What ``FunAD.load`` may change of a saved model: where and how fast it runs, not what it computes.
LOAD_OVERRIDES = ("device", "num_workers", "batch_size_extract", "progress", "cache_dir", "weights")


def _fitted_attribute(name: str, doc: str) -> property:
    """A read-only ``<name>_`` attribute of the estimator, held by its :class:`FittedState`."""
    return property(lambda self: getattr(self._fitted(), name), doc=doc)


class NotFittedError(RuntimeError, AttributeError):
    """A fitted attribute (``threshold_``, ...) or method asked of a model not fitted yet; an AttributeError too, so
    that ``hasattr(model, "threshold_")`` answers False, as for a scikit-learn estimator."""


class FunAD:
    """Fully unsupervised anomaly detector (FUN-AD) on an unlabelled, possibly contaminated image set.

    Parameters are the fields of :class:`funad.config.FunADConfig`. ``fit`` sets ``fitted_``
    (:class:`funad.fitted_state.FittedState`), shown as the fitted attributes below, and
    ``skipped_`` (the training files that could not be read).
    """

    scorer_ = _fitted_attribute("scorer", "the patch scorer predict uses (``scorer``), fitted on the trusted images")
    local_net_ = _fitted_attribute("local_net", "the trained Local-Net")
    train_paths_ = _fitted_attribute("train_paths", "the training images (absolute paths)")
    train_digests_ = _fitted_attribute("train_digests", "the SHA-256 of each training image's file")
    train_scores_ = _fitted_attribute("train_scores", "each training image's final Local-Net score")
    train_predict_scores_ = _fitted_attribute(
        "train_predict_scores", "the training scores in predict's units (a scorer that stores training patches "
        "scores each image without its own); the threshold is set on them")
    judged_normal_ = _fitted_attribute("judged_normal", "the images the final memory bank treats as normal")
    threshold_ = _fitted_attribute("threshold", "label-free threshold: a score above it is anomalous (:meth:`label`)")
    pixel_threshold_ = _fitted_attribute("pixel_threshold", "label-free pixel threshold: map pixels above it form "
                                         "an anomalous image's defect regions (:meth:`defect_regions`)")
    contamination_ = _fitted_attribute("contamination", "estimated share of anomalous training images "
                                       "(:mod:`funad.method.threshold`)")
    history_ = _fitted_attribute("history", "per-epoch training statistics")
    world_size_ = _fitted_attribute("world_size", "how many processes (torchrun's ranks) shared extraction "
                                    "and training")

    def __init__(self, *, pretrained: bool = True, cache_dir: str | Path | bool | None = None,
                 progress: bool = True,
                 **params: Any):
        self.config = FunADConfig(**params)
        self.pretrained = pretrained
        self.cache_dir = cache_dir
        self.progress = progress
        self._backbone: Backbone | None = None

    # ----------------------------------------------------------------- backbone and features
    @property
    def backbone(self) -> Backbone:
        if self._backbone is None:
            self._backbone = self._build_backbone(self.input_side())
        return self._backbone

    def _build_backbone(self, image_size: int | None) -> Backbone:
        # Random weights (pretrained=False, tests) are seeded so that a saved model reloads the same.
        with torch.random.fork_rng():
            torch.manual_seed(self.config.seed)
            backbone = create_backbone(self.config.backbone, weights=self.config.weights,
                                       pretrained=self.pretrained, image_size=image_size,
                                       precision=self.config.precision, keep_aspect=self.keeps_aspect(),
                                       align_object=self.aligns_objects())
        return place_backbone(backbone, self.device)

    @property
    def device(self) -> torch.device:
        return resolve_device(self.config.device)

    def keeps_aspect(self) -> bool:
        """Whether images are letterboxed: ``aspect`` "keep", or "auto" as :meth:`choose_preprocessing` chose (stretched
        before it has)."""
        if self.config.aspect == "auto":
            return bool(getattr(self, "keep_aspect_", False))
        return self.config.aspect == "keep"

    def aligns_objects(self) -> bool:
        """Whether photos are turned to their object's canonical pose: ``align`` "object", or "auto" as
        :meth:`choose_preprocessing` chose (not turned before it has)."""
        if self.config.align == "auto":
            return bool(getattr(self, "align_object_", False))
        return self.config.align == "object"

    def input_side(self) -> int | None:
        """The backbone's square input side: ``image_size``, else the side :meth:`choose_preprocessing` chose for
        letterboxed images, else None (the backbone's own)."""
        return self.config.image_size or self._chosen_side()

    def _chosen_side(self) -> int | None:
        """The side :meth:`choose_preprocessing` chose for letterboxed images; None where none was needed or
        ``image_size`` is given."""
        return None if self.config.image_size is not None else getattr(self, "image_size_", None)

    def resolved_preprocessing(self) -> dict[str, Any]:
        """The ``aspect`` and ``align`` settings with "auto" resolved, and the input side and knn pool cap where
        :meth:`choose_preprocessing` enlarged the input: what a fit on the same features sets."""
        resolved: dict[str, Any] = {"aspect": "keep" if self.keeps_aspect() else "stretch",
                                    "align": "object" if self.aligns_objects() else "none"}
        if self._chosen_side() is not None:
            resolved |= {"image_size": self._chosen_side(),
                         "knn_pool_max_patches": self.pool_cap(self.config.knn_pool_max_patches)}
        return resolved

    def resolved_config(self) -> FunADConfig:
        """The configuration with what :meth:`choose_preprocessing` chose written in (:meth:`resolved_preprocessing`):
        what a saved model reloads with."""
        return FunADConfig.from_dict(self.config.to_dict() | self.resolved_preprocessing())

    def pool_cap(self, cap: int | None) -> int | None:
        """A coreset pool cap stated for the backbone's own input, scaled to the patches of the input side
        :meth:`choose_preprocessing` chose, so that the pool keeps the same share of the training patches."""
        chosen = self._chosen_side()
        if cap is None or chosen is None:
            return cap
        own_side, patch = self.own_input_
        return scaled_pool_cap(cap, (chosen // patch) ** 2, (own_side // patch) ** 2)

    def choose_preprocessing(self, paths: Sequence[Path]) -> FunAD:
        """Where ``aspect`` or ``align`` is "auto", choose ``keep_aspect_`` from the training images' shapes
        (:func:`funad.utils.letterbox.shapes_differ`) and ``align_object_`` from their objects
        (:func:`funad.utils.pose.objects_elongated`, on at most :data:`POSE_SAMPLE` of them); without an
        ``image_size``, letterboxed images get the input side ``image_size_`` that keeps the median image's
        shorter side at the backbone's own input side (:func:`funad.utils.letterbox.kept_aspect_side`). Before any
        extraction: the features depend on all three."""
        chosen = (self.keeps_aspect(), self.aligns_objects(), self.input_side())
        needs_sizes = self.config.aspect == "auto" or (self.config.image_size is None and self.keeps_aspect())
        sizes = [(width, height) for height, width in map(image_size, paths)] if needs_sizes else []
        if self.config.aspect == "auto":
            self.keep_aspect_ = shapes_differ(sizes)
        if self.config.align == "auto":
            self.align_object_ = objects_elongated(_sample_poses(paths))
        if self.config.image_size is None:
            self.image_size_ = self._kept_aspect_side(sizes) if self.keeps_aspect() else None
            if self.image_size_ is not None:
                logger.info("letterboxed photos: a %d px input keeps the median photo's shorter side at %d px "
                            "(--image-size sets it)", self.image_size_, self.own_input_[0])
        if self._backbone is not None and chosen != (self.keeps_aspect(), self.aligns_objects(), self.input_side()):
            self._backbone = None  # built before the choice: rebuilt with it
        return self

    def _kept_aspect_side(self, sizes: Sequence[tuple[int, int]]) -> int | None:
        """The input side for letterboxed images of these (width, height); None where it is the backbone's own.
        Sets ``own_input_``: the backbone's own input side and its pixels per grid cell."""
        own = self._backbone if self._backbone is not None and self.input_side() is None else self._build_backbone(None)
        own_side = own.preprocessing.image_size
        self.own_input_ = (own_side, own_side // own.grid[0])
        side = kept_aspect_side(sizes, *self.own_input_)
        return None if side == own_side else side

    def weights_id(self) -> str | None:
        """Identifies the backbone weights for the feature cache; None (no caching) for random weights."""
        if self.config.weights:
            return "sha256:" + file_digest(self.config.weights)
        return f"pretrained:{self.config.backbone}" if self.pretrained else None

    def _feature_cache(self) -> FeatureCache | None:
        weights_id = self.weights_id()
        if self.cache_dir is False or weights_id is None:
            return None
        root = Path(self.cache_dir) if isinstance(self.cache_dir, (str, Path)) else default_cache_dir()
        return FeatureCache(root, self.backbone.describe(), weights_id)

    def feature_cache_folder(self) -> Path | None:
        """The folder this model's features are cached in; None without a cache."""
        cache = self._feature_cache()
        return None if cache is None else cache.folder

    def extract(self, paths: Sequence[Path], description: str = "features", view: str | None = None) -> FeatureSet:
        """Features of ``paths`` (in pose ``view`` if given), in order; under torchrun each rank extracts its share
        and all get every one."""
        return extract_features_sharded(self.backbone, paths, cache=self._feature_cache(),
                                        batch_size=self.config.batch_size_extract,
                                        num_workers=self.config.num_workers, device=self.device,
                                        progress=self.progress, description=description, view=view)

    def with_training_views(self, features: FeatureSet, num_synthetic: int = 0) -> FeatureSet:
        """``features`` with the patches of its real images in every pose the scorer reads when fitted.

        Views ``features`` already has are kept; the others are extracted (and cached) from the
        image files, before any training, so that a file that no longer reads fails the fit at once.
        """
        wanted = [view for view in training_views(self.config) if view not in features.views]
        if not wanted:
            return features
        real_paths = features.paths[:len(features) - num_synthetic]
        views = dict(features.views)
        for view in wanted:
            posed = self.extract(real_paths, description=f"extracting features ({view})", view=view)
            if posed.failures:
                path, reason = next(iter(posed.failures.items()))
                raise ValueError(f"{path}: {reason}; the scorer's corroboration views need every training image's "
                                 "file (or knn_corroboration_views='none')")
            views[view] = posed.patches
        return dataclasses.replace(features, views=views)

    # ----------------------------------------------------------------- training
    def fit(self, images: str | Path | Iterable[str | Path], *, strict: bool = False,
            state: TrainingState | None = None, on_epoch_end: Callable[[TrainingState], None] | None = None,
            checkpoint: TrainingCheckpoint | None = None) -> FunAD:
        """Train on an unlabelled folder (searched recursively) or a list of image files.

        ``checkpoint`` saves the training state after every epoch and, with ``resume=True``,
        continues a run that was interrupted (see :mod:`funad.method.checkpoint`).

        Under torchrun (a process group initialised, :mod:`funad.utils.distributed`) every rank
        calls ``fit``: the ranks share extraction and training, rank 0 alone saves checkpoints
        and fits the rest (scorer, thresholds); on the other ranks ``fit`` returns unfitted.
        """
        try:
            paths = discover_images(images)
        except TypeError as error:
            raise TypeError(f"{error}: fit reads files and folders only (save arrays and PIL images as image files "
                            "first)") from error
        usable, skipped = check_images(paths, strict=strict)
        _require_training_images(len(usable), images)  # before minutes of extraction, where the files tell
        self.choose_preprocessing(usable)
        features, num_synthetic = self.extract_training_set(usable)
        self.skipped_ = skipped + [SkippedImage(path, reason) for path, reason in features.failures.items()]
        _require_training_images(len(features), images)  # files that failed to decode are gone too
        return self.fit_features(features, state=state, on_epoch_end=on_epoch_end, checkpoint=checkpoint,
                                 num_synthetic=num_synthetic)

    def extract_training_set(self, paths: Sequence[Path]) -> tuple[FeatureSet, int]:
        """Features of the training images, followed by FUN-AD*'s synthetic anomalies (if any).

        With ``synthetic_ratio`` > 0, synthetic anomalies made from the training images join the
        unlabelled pool; their features outlive their temporary files (in memory or in the cache).
        Returns the features and how many of them, at the end, are synthetic.
        """
        from funad.data.augment import write_synthetic_anomalies  # scipy.ndimage: 0.25 s that predict does without

        with tempfile.TemporaryDirectory(prefix="funad-synthetic-") as folder:
            synthetic = write_synthetic_anomalies(paths, self.config.synthetic_ratio, self.config.seed, Path(folder))
            features = self.extract(list(paths) + synthetic, description="extracting features")
        return features, len(synthetic)

    def fit_features(self, features: FeatureSet, *, state: TrainingState | None = None,
                     on_epoch_end: Callable[[TrainingState], None] | None = None,
                     checkpoint: TrainingCheckpoint | None = None, num_synthetic: int = 0) -> FunAD:
        """Train on already extracted features (the benchmark reuses one extraction for many runs).

        The last ``num_synthetic`` features are FUN-AD*'s synthetic anomalies: they take part in
        training only; ``train_paths_``, ``train_scores_``, ``judged_normal_``, the knn bank and the
        threshold describe the real training images alone.
        """
        features = self.with_training_views(features, num_synthetic)
        method_features = features.method_features(self.config.level)
        if len(features) < distributed.world_size():
            raise ValueError(f"{len(features)} training images cannot be shared among {distributed.world_size()} "
                             "processes: start fewer")
        trainer = Trainer(self.config, method_features, self.device)
        state = state or make_state(self.config, method_features.dim, self.device)
        if checkpoint is not None and distributed.is_main():
            # Synthetic anomalies live in a fresh temporary folder each run: their paths are not
            # part of the identity (their feature values are).
            real_paths = features.paths[:len(features.paths) - num_synthetic]
            identity = training_identity(self.config, real_paths, features, self.backbone.describe(),
                                         self.weights_id())
            state = checkpoint.start(state, identity)
            on_epoch_end = checkpoint.saving_after(on_epoch_end)
        broadcast_state(state)  # a resumed run continues from rank 0's checkpoint on every rank
        state = trainer.fit(state, progress=self.progress, on_epoch_end=on_epoch_end)
        bank = trainer.final_bank(state)
        if not distributed.is_main():
            logger.info("rank %d: training done; rank 0 fits the scorer and writes the model", distributed.rank())
            return self
        if distributed.world_size() > 1:
            distributed.use_every_core()  # the other ranks are done
        local_net = state.local_net.eval()
        real = len(features) - num_synthetic
        train_scores = bank.image_scores[:real]
        judged_normal = bank.candidate_normals[:real]
        trusted = self.trusted_images(train_scores)
        scorer = create_scorer(self.resolved_config(), local_net).fit(method_features, trusted)
        # Each scorer scores the synthetic anomalies too (one pass over the features); they are dropped here.
        train_predict_scores = scorer.score_training_images(method_features)[:real]
        estimate = estimate_threshold(train_predict_scores, judged_normal, self.config.threshold_tail_widths)
        reference = pixel_reference_images(trusted, ~above_threshold(train_predict_scores, estimate.threshold))
        pixel_threshold = training_pixel_threshold(scorer, method_features, reference, seed=self.config.seed,
                                                   shown=self._patches_shown(features.paths[:real]))
        # Absolute paths: `funad audit` and the report find the images from any working folder.
        train_paths = [Path(os.path.abspath(path)) for path in features.paths[:real]]
        # Features may come without their files (tests, a benchmark's saved features): no digest then.
        digests = [file_digest(path) if path.is_file() else "" for path in train_paths]
        self.fitted_ = FittedState(scorer, local_net, train_paths, digests,
                                   train_scores, train_predict_scores, judged_normal, estimate.threshold,
                                   pixel_threshold, estimate.contamination, state.history,
                                   distributed.world_size())
        logger.info("label-free threshold %.6g (%s): %.1f%% of the training images look anomalous",
                    estimate.threshold, estimate.method, 100 * estimate.contamination)
        return self

    def trusted_images(self, train_scores: np.ndarray) -> np.ndarray:
        """The training images a scorer may learn normality from (the "knn" bank): the ``knn_normal_share`` that
        ``train_scores``, the Local-Net's final image scores, rank lowest.

        The default share, 1, is every image: the corroborated bank handles the contaminants itself, and on
        MVTec screw the Local-Net ranked the contaminating images lowest (config, "Inference"). A quantile
        rather than the Local-Net's min-max split (``judged_normal_``), which on bottle kept only 15-20 % of
        the images, too few to cover normal variation.
        """
        # Two at least: each training image is scored without its own entries, so one image's bank leaves nothing.
        count = min(len(train_scores), max(2, share_count(self.config.knn_normal_share, len(train_scores))))
        return np.sort(np.argsort(train_scores, kind="stable")[:count])

    # ----------------------------------------------------------------- inference
    def _fitted(self) -> FittedState:
        if "fitted_" not in vars(self):
            raise NotFittedError("this FunAD model is not fitted yet: call fit() or FunAD.load()")
        fitted: FittedState = self.fitted_
        return fitted

    def predict(self, images: ImageInput | Iterable[ImageInput],
                map_size: MapSize = "original", *, keep_images: bool = False) -> Iterator[Prediction]:
        """Score and map each image: an iterator of predictions, files read and scored one batch at a time (the
        inputs themselves are gathered first: an iterable is read whole, arrays are converted to images; a
        camera loop calls predict for each frame or batch). An unfitted model or a bad ``map_size`` fails here,
        not at the first prediction.

        ``map_size``: maps at each image's own size (``"original"``), at the backbone's input
        size (``"input"``, small whatever the photo's size) or a fixed ``(height, width)``.
        ``keep_images``: each prediction also holds the decoded RGB image (``image``), to draw
        on without reading the file again.

        ``images``: image files, folders, numpy arrays (HxW, HxWx3; uint8, uint16 or float in
        0..1) or PIL images, one or a list of them; an array is read exactly as a file with its
        pixels would be (:mod:`funad.data.images`). Exactly one :class:`Prediction` per image, in
        order: a folder's images each once, a file reachable from two items (given twice, or inside a
        folder also given) twice; an unreadable file is logged and gets its ``error``.
        """
        scorer = self._fitted().scorer
        return self._predict(scorer, gather_images(images), check_map_size(map_size), keep_images)

    def _predict(self, scorer: PatchScorer, sources: list[ImageSource], map_size: MapSize,
                 keep_images: bool) -> Iterator[Prediction]:
        paths = [source if isinstance(source, Path) else None for source in sources]
        backbone = self.backbone
        input_size, keep_aspect = backbone.preprocessing.image_size, backbone.preprocessing.keep_aspect
        for batch in iterate_features(backbone, sources, batch_size=self.config.batch_size_extract,
                                      num_workers=self.config.num_workers, device=self.device,
                                      progress=self.progress, description="predicting", keep_images=keep_images):
            patches = batch.features.method_patches(self.config.level).float()
            scored = score_images(scorer, patches, backbone.grid, input_size, self.config.map_sigma, keep_aspect)
            for row, index in enumerate(batch.indices):
                if batch.errors[row]:
                    logger.warning("cannot score %s: %s", paths[index], batch.errors[row])
                    yield Prediction(paths[index], math.nan, None, batch.errors[row])
                else:
                    anomaly_map = scored.anomaly_map(row, *map_shape(map_size, batch.sizes[row], input_size),
                                                     batch.sizes[row], batch.poses[row])
                    yield Prediction(paths[index], float(scored.scores[row]), anomaly_map, image=batch.images[row])

    def _patches_shown(self, paths: Sequence[Path]) -> np.ndarray | None:
        """bool ``[len(paths), K]``: the patches the maps of letterboxed images show; None when every patch is shown
        (stretched, the image level, or an image whose file is gone)."""
        preprocessing, grid = self.backbone.preprocessing, self.backbone.grid
        if not preprocessing.keep_aspect or self.config.level != "patch" or not all(p.is_file() for p in paths):
            return None
        return np.stack([cells_shown(content_box(width, height, preprocessing.image_size, True), grid,
                                     preprocessing.image_size) for height, width in map(image_size, paths)])

    def label(self, scores: float | Sequence[float] | np.ndarray, threshold: float | None = None) -> np.ndarray:
        """True where a score is anomalous: above ``threshold`` (default: the label-free ``threshold_``)."""
        fitted = self._fitted()
        return above_threshold(scores, fitted.threshold if threshold is None else threshold)

    def defect_regions(self, anomaly_map: np.ndarray,
                       pixel_threshold: float | None = None) -> tuple[np.ndarray, list[Region]]:
        """An anomalous image's defect mask (bool, the map's size) and its connected regions, largest first.

        ``pixel_threshold`` defaults to the label-free ``pixel_threshold_``.
        """
        return defect_regions(anomaly_map, self._fitted().pixel_threshold if pixel_threshold is None
                              else pixel_threshold)

    def heatmap_range(self) -> tuple[float, float]:
        """Colour range for heatmaps, the same for every image so that colours compare across images.

        The scorer's own range where it has one (Local-Net scores lie in (0, 1)); unbounded
        scores span 0 (or the lowest training image score, for standardised scores that go below
        it) to the highest training image score (in predict units).
        """
        fitted = self._fitted()
        scores = fitted.train_predict_scores
        return fitted.scorer.score_range or (min(0.0, float(np.min(scores))), float(np.max(scores)))

    def score(self, images: ImageInput | Iterable[ImageInput]) -> np.ndarray:
        """One anomaly score per image (higher = more anomalous); NaN for an unreadable image (logged)."""
        return np.array([p.score for p in self.predict(images)], dtype=np.float64)

    def anomaly_maps(self, images: ImageInput | Iterable[ImageInput]) -> list[np.ndarray | None]:
        """One float32 map per image at the image's original height x width; None for an unreadable image."""
        return [p.anomaly_map for p in self.predict(images)]

    # ----------------------------------------------------------------- persistence
    def save(self, directory: str | Path, *, overwrite: bool = False) -> Path:
        """Write the fitted model into ``directory`` (model.json and model.safetensors; :meth:`load` reads it back)
        and return its absolute path. The folder appears whole or not at all. A model saved there before is
        replaced; any other existing path only with ``overwrite``, which deletes what it holds."""
        directory = Path(directory)
        holds_something = directory.exists() and not (directory.is_dir() and not any(directory.iterdir()))
        if holds_something and not overwrite and not (directory / MANIFEST).is_file():
            raise FileExistsError(f"{directory} exists and holds no funad model: saving would delete what it holds; "
                                  "pass overwrite=True to replace it, or choose another folder")
        # What "auto" chose is saved as what was fitted: the model reloads with its features' preprocessing.
        estimator = {"config": self.resolved_config().to_dict(), "pretrained": self.pretrained,
                     "backbone": self.backbone.describe(), "weights_id": self.weights_id()}
        return save_model(directory, self._fitted(), estimator)

    @classmethod
    def load(cls, directory: str | Path, **overrides: Any) -> FunAD:
        """A saved model; ``overrides`` change only how it runs, not what was fitted: the settings of
        :data:`LOAD_OVERRIDES` (``device``, ...; ``weights``: where the same weights file is now, checked by its
        content); any other is refused, to be fitted with instead."""
        refused = sorted(set(overrides) - set(LOAD_OVERRIDES))
        if refused:
            raise ValueError(f"FunAD.load takes only {', '.join(LOAD_OVERRIDES)}; {', '.join(refused)} would change "
                             "what the model fitted: fit a model with them instead")
        directory = Path(directory)
        saved = load_model(directory)
        manifest = directory / MANIFEST
        try:
            config = FunADConfig.from_dict(saved.estimator["config"]).to_dict()
        except (TypeError, ValueError) as error:  # an edited manifest: unknown key or out-of-range value
            raise ModelFormatError(f"{manifest}: invalid configuration ({error})") from error
        model = cls(pretrained=saved.estimator["pretrained"], **config | overrides)  # a bad override is the caller's
        if "weights" in overrides and model.weights_id() != saved.estimator.get("weights_id"):  # a file moved since
            raise ValueError(f"{overrides['weights']} is not the weights file {directory} was fitted with "
                             f"({saved.estimator.get('weights_id')})")
        backbone = model.backbone.describe()
        if backbone != saved.estimator["backbone"]:
            raise ModelFormatError(f"{directory}: backbone {backbone} differs from the saved "
                                   f"{saved.estimator['backbone']}")
        net = saved.state.local_net
        if (net.hidden, net.slope) != (model.config.head_hidden, model.config.leaky_slope):
            raise ModelFormatError(f"{directory}: the saved Local-Net (hidden {net.hidden}, slope {net.slope}) does "
                                   f"not fit the configuration in {manifest.name}")
        model.fitted_ = saved.state
        return model


def pixel_reference_images(trusted: np.ndarray, labelled_normal: np.ndarray) -> np.ndarray:
    """The training images the pixel threshold is read from: labelled normal and not ``trusted`` (the
    scorer learnt from those), or all labelled normal when fewer than three such images remain."""
    held_out = labelled_normal.copy()
    held_out[trusted] = False
    chosen = held_out if held_out.sum() >= 3 else labelled_normal
    return np.flatnonzero(chosen if chosen.any() else np.ones_like(labelled_normal))


def _require_training_images(count: int, images: str | Path | Iterable[str | Path]) -> None:
    if count < MIN_TRAINING_IMAGES:
        where = ", ".join(str(p) for p in _roots(images)) or "an empty list"
        raise ValueError(f"FUN-AD needs at least {MIN_TRAINING_IMAGES} usable training images; found {count} in "
                         f"{where}")


def _roots(images: str | Path | Iterable[str | Path]) -> list[Path]:
    return [Path(images)] if isinstance(images, (str, Path)) else [Path(p) for p in images][:3]


def _sample_poses(paths: Sequence[Path]) -> Iterator[ObjectPose | None]:
    """The object poses of at most :data:`~funad.utils.pose.POSE_SAMPLE` of ``paths``, evenly spread; an image that
    does not decode is passed over (extraction reports it)."""
    for index in np.unique(np.linspace(0, len(paths) - 1, min(len(paths), POSE_SAMPLE)).astype(int)):
        try:
            yield estimate_pose(load_image(paths[index]))
        except ImageLoadError:
            continue
