"""The user-facing estimator: ``FunAD(...).fit(folder)``, then ``score`` / ``anomaly_maps`` / ``save``."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from funad.config import FunADConfig
from funad.data.augment import write_synthetic_anomalies
from funad.data.images import SkippedImage, check_images, discover_images
from funad.features.backbones import Backbone, create_backbone, file_sha256
from funad.features.cache import FeatureCache, default_cache_dir
from funad.features.extraction import FeatureSet, MethodFeatures, extract_features, iterate_features, resolve_device
from funad.inference.knn import NearestNeighbourScorer
from funad.inference.maps import patch_scores_to_maps, resize_map
from funad.method.checkpoint import TrainingCheckpoint, training_identity
from funad.method.threshold import estimate_threshold
from funad.method.trainer import Trainer, TrainingState, make_state

logger = logging.getLogger(__name__)

# Pseudo-labelling needs a bank from other images and at least two images per batch; below
# this many images the min-max statistics of the method are meaningless.
MIN_TRAINING_IMAGES = 8


@dataclass
class Prediction:
    path: Path
    score: float
    anomaly_map: np.ndarray  # float32 [height, width]


def _as_paths(images: str | Path | Iterable[str | Path]) -> list[Path]:
    return discover_images(images)


class FunAD:
    """Fully unsupervised anomaly detector (FUN-AD) on an unlabelled, possibly contaminated image set.

    Parameters are the fields of :class:`funad.config.FunADConfig`. Fitted attributes:
    ``local_net_`` (the trained Local-Net), ``train_paths_``, ``train_scores_`` (each training
    image's final score), ``judged_normal_`` (the images the final memory bank treats as normal),
    ``history_`` (per-epoch statistics) and, with ``scorer="knn"``, ``knn_`` (a nearest-neighbour
    bank of the patches of the lowest-scoring training images, :meth:`knn_bank_images`). ``train_predict_scores_`` are the training scores
    in the units ``predict`` outputs (with ``knn``: each image scored without its own bank
    entries); from them alone come ``threshold_`` (a score above it is anomalous, see
    :meth:`label`) and ``contamination_``, the estimated share of anomalous training images
    (:mod:`funad.method.threshold`).
    """

    def __init__(self, *, pretrained: bool = True, cache_dir: str | Path | None = None, progress: bool = True,
                 **params):
        self.config = FunADConfig(**params)
        self.pretrained = pretrained
        self.cache_dir = cache_dir
        self.progress = progress
        self._backbone: Backbone | None = None

    # ----------------------------------------------------------------- backbone and features
    @property
    def backbone(self) -> Backbone:
        if self._backbone is None:
            # Random weights (pretrained=False, tests) are seeded so that a saved model reloads the same.
            with torch.random.fork_rng():
                torch.manual_seed(self.config.seed)
                self._backbone = create_backbone(self.config.backbone, weights=self.config.weights,
                                                 pretrained=self.pretrained, image_size=self.config.image_size)
        return self._backbone

    @property
    def device(self) -> torch.device:
        return resolve_device(self.config.device)

    def weights_id(self) -> str | None:
        """Identifies the backbone weights for the feature cache; None (no caching) for random weights."""
        if self.config.weights:
            return "sha256:" + file_sha256(self.config.weights)
        return f"pretrained:{self.config.backbone}" if self.pretrained else None

    def _feature_cache(self) -> FeatureCache | None:
        weights_id = self.weights_id()
        if self.cache_dir is False or weights_id is None:
            return None
        root = default_cache_dir() if self.cache_dir is None else Path(self.cache_dir)
        return FeatureCache(root, self.backbone.describe(), weights_id)

    def extract(self, paths: Sequence[Path], description: str = "features") -> FeatureSet:
        return extract_features(self.backbone, paths, cache=self._feature_cache(),
                                batch_size=self.config.batch_size_extract, num_workers=self.config.num_workers,
                                device=self.device, progress=self.progress, description=description)

    # ----------------------------------------------------------------- training
    def fit(self, images: str | Path | Iterable[str | Path], *, strict: bool = False,
            state: TrainingState | None = None, on_epoch_end=None,
            checkpoint: TrainingCheckpoint | None = None) -> "FunAD":
        """Train on an unlabelled folder (searched recursively) or a list of image files.

        ``checkpoint`` saves the training state after every epoch and, with ``resume=True``,
        continues a run that was interrupted (see :mod:`funad.method.checkpoint`).
        """
        paths = _as_paths(images)
        usable, skipped = check_images(paths, strict=strict)
        features, num_synthetic = self.extract_training_set(usable)
        self.skipped_ = skipped + [SkippedImage(path, reason) for path, reason in features.failures.items()]
        if len(features) < MIN_TRAINING_IMAGES:
            raise ValueError(f"FUN-AD needs at least {MIN_TRAINING_IMAGES} usable training images; "
                             f"found {len(features)} in {', '.join(str(p) for p in _roots(images))}")
        return self.fit_features(features, state=state, on_epoch_end=on_epoch_end, checkpoint=checkpoint,
                                 num_synthetic=num_synthetic)

    def extract_training_set(self, paths: Sequence[Path]) -> tuple[FeatureSet, int]:
        """Features of the training images, followed by FUN-AD*'s synthetic anomalies (if any).

        With ``synthetic_ratio`` > 0, synthetic anomalies made from the training images join the
        unlabelled pool; their features outlive their temporary files (in memory or in the cache).
        Returns the features and how many of them, at the end, are synthetic.
        """
        with tempfile.TemporaryDirectory(prefix="funad-synthetic-") as folder:
            synthetic = write_synthetic_anomalies(paths, self.config.synthetic_ratio, self.config.seed, Path(folder))
            features = self.extract(list(paths) + synthetic, description="extracting features")
        return features, len(synthetic)

    def fit_features(self, features: FeatureSet, *, state: TrainingState | None = None,
                     on_epoch_end=None, checkpoint: TrainingCheckpoint | None = None,
                     num_synthetic: int = 0) -> "FunAD":
        """Train on already extracted features (the benchmark reuses one extraction for many runs).

        The last ``num_synthetic`` features are FUN-AD*'s synthetic anomalies: they take part in
        training only; ``train_paths_``, ``train_scores_``, ``judged_normal_``, the knn bank and the
        threshold describe the real training images alone.
        """
        method_features = features.method_features(self.config.level)
        trainer = Trainer(self.config, method_features, self.device)
        state = state or make_state(self.config, method_features.dim, self.device)
        if checkpoint is not None:
            # Synthetic anomalies live in a fresh temporary folder each run: their paths are not
            # part of the identity (their feature values are).
            real_paths = features.paths[:len(features.paths) - num_synthetic]
            identity = training_identity(self.config, real_paths, features, self.backbone.describe(),
                                         self.weights_id())
            state = checkpoint.start(state, identity)
            on_epoch_end = checkpoint.saving_after(on_epoch_end)
        state = trainer.fit(state, progress=self.progress, on_epoch_end=on_epoch_end)
        bank = trainer.final_bank(state)
        self.local_net_ = state.local_net.eval()
        real = len(features) - num_synthetic
        self.train_paths_ = list(features.paths[:real])
        self.train_scores_ = bank.image_scores[:real]
        self.judged_normal_ = bank.candidate_normals[:real]
        self.history_ = state.history
        if self.config.scorer == "knn":
            self.knn_ = NearestNeighbourScorer(self.config.knn_patch_fraction, self.config.seed).fit(
                method_features, self.knn_bank_images())
            real_features = MethodFeatures(method_features.arrays[:real])  # synthetic anomalies excluded
            self.train_predict_scores_ = self.knn_.training_image_scores(real_features)
        else:
            self.train_predict_scores_ = self.train_scores_
        estimate = estimate_threshold(self.train_predict_scores_, self.judged_normal_)
        self.threshold_, self.contamination_ = estimate.threshold, estimate.contamination
        logger.info("label-free threshold %.6g (%s): %.1f%% of the training images look anomalous",
                    estimate.threshold, estimate.method, 100 * estimate.contamination)
        return self

    def knn_bank_images(self) -> np.ndarray:
        """The training images whose patches form the "knn" bank: the lowest-scoring share.

        A quantile of the Local-Net's scores rather than its min-max split (``judged_normal_``):
        on bottle the split kept only 15-20 % of the images (one extreme score stretches the
        range), too few to cover normal variation; the lower half held no planted anomaly in
        three seeds and scored higher (README, "Defaults").
        """
        count = max(1, int(round(self.config.knn_normal_share * len(self.train_scores_))))
        return np.sort(np.argsort(self.train_scores_, kind="stable")[:count])

    # ----------------------------------------------------------------- inference
    def _check_fitted(self) -> None:
        if not hasattr(self, "local_net_"):
            raise RuntimeError("this FunAD model is not fitted yet: call fit() or FunAD.load()")

    @torch.no_grad()
    def patch_scores(self, patches: torch.Tensor) -> torch.Tensor:
        """``[B, K, D]`` method features -> ``[B, K]`` patch scores with the configured scorer."""
        self._check_fitted()
        if self.config.scorer == "knn":
            return self.knn_.score(patches).to(patches.device)
        return self.local_net_.score(patches)

    def predict(self, images: str | Path | Iterable[str | Path]) -> Iterable[Prediction]:
        """Score and map each image, streaming (one batch in memory at a time).

        Unreadable images are logged and skipped.
        """
        self._check_fitted()
        paths = _as_paths(images)
        device = self.device
        self.local_net_.to(device)
        backbone = self.backbone
        size = backbone.preprocessing.image_size
        for batch in iterate_features(backbone, paths, batch_size=self.config.batch_size_extract,
                                      num_workers=self.config.num_workers, device=device,
                                      progress=self.progress, description="predicting"):
            if self.config.level == "image":
                features = batch.features.global_[:, None, :]
            else:
                features = batch.features.patches
            scores = self.patch_scores(features.float())
            if self.config.level == "image":  # one score per image: the map is that score everywhere
                maps = scores.view(-1, 1, 1).expand(-1, size, size)
            else:
                maps = patch_scores_to_maps(scores, backbone.grid, size, self.config.map_sigma)
            image_scores = scores.amax(dim=1).cpu()
            for row, index in enumerate(batch.indices):
                if batch.errors[row]:
                    logger.warning("skipped %s: %s", paths[index], batch.errors[row])
                    continue
                height, width = batch.sizes[row]
                anomaly_map = resize_map(maps[row], height, width).cpu().numpy().astype(np.float32)
                yield Prediction(paths[index], float(image_scores[row]), anomaly_map)

    def label(self, scores, threshold: float | None = None) -> np.ndarray:
        """True where a score is anomalous: above ``threshold`` (default: the label-free ``threshold_``)."""
        self._check_fitted()
        return np.asarray(scores, dtype=np.float64) > (self.threshold_ if threshold is None else threshold)

    def heatmap_range(self) -> tuple[float, float]:
        """Colour range for heatmaps, the same for every image so that colours compare across images.

        Local-Net scores lie in (0, 1); nearest-neighbour distances are unbounded, so they span 0 to
        the highest training image score (in predict units).
        """
        self._check_fitted()
        if self.config.scorer == "knn":
            return 0.0, float(np.max(self.train_predict_scores_))
        return 0.0, 1.0

    def score(self, images) -> np.ndarray:
        """One anomaly score per image (higher = more anomalous)."""
        return np.array([p.score for p in self.predict(images)], dtype=np.float64)

    def anomaly_maps(self, images) -> list[np.ndarray]:
        """One float32 map per image at the image's original height x width."""
        return [p.anomaly_map for p in self.predict(images)]

    # ----------------------------------------------------------------- persistence
    def save(self, directory: str | Path) -> Path:
        from funad.persistence import save_model

        self._check_fitted()
        return save_model(self, Path(directory))

    @classmethod
    def load(cls, directory: str | Path, **overrides) -> "FunAD":
        from funad.persistence import load_model

        return load_model(Path(directory), **overrides)


def _roots(images) -> list[Path]:
    return [Path(images)] if isinstance(images, (str, Path)) else [Path(p) for p in images][:3]
