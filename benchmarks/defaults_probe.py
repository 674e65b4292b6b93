"""Re-run the measurements behind funad's defaults (docs/accuracy.md): feature variants x scorers.

For each DATASET (``ROOT`` or ``ROOT:CATEGORY``, as for ``funad benchmark``) and seed, one split
of the contaminated-data protocol (``--contamination`` x the training images' count of test
anomalies moved, unlabelled, into training). Every scorer is fitted on the same training features
and scores the same test features, evaluated as ``funad benchmark`` evaluates (the same maps and
metric code: image AUROC and, where the dataset has masks, pixel AUROC at each mask's
resolution, per setting).

Feature variants:

* ``m468``: the default ONNX DINOv2's features (the mean of blocks 4, 6 and 8, 0-based, each after
  the final LayerNorm) as funad extracts them, from the same feature cache: the probe's default
  scorer reads to the bit what ``funad fit`` and ``funad benchmark`` read;
* ``b4``, ``b6``, ``b8``, ``c68``: the same DINOv2, extracted once per image into the feature cache
  with blocks 4, 6 and 8 concatenated, then sliced: one block, or blocks 6 and 8 concatenated;
  ``m468_avg3``: the mean of the three with each patch the mean of its 3x3 neighbourhood of
  patches (PatchCore's local aggregation, ``local_kernel=3``); ``m468_no_affine``: the mean of the
  three without the final LayerNorm's learned per-channel scale and shift (a few channels of large
  scale dominate the Euclidean distance). Each block was rounded to fp16 before these combine, so a
  derived mean differs from ``m468`` in the last bit of about a third of its values;
* ``efficientnet_lite0``: the other backbone that ships offline;
* ``m468+efficientnet_lite0``: both shipped backbones, each patch's two parts L2-normalised and
  concatenated (each scaled by 1/sqrt 2: unit norm), EfficientNet-Lite0's 28x28 grid averaged down
  to the DINOv2's 16x16 by area so that the bank and its cost stay those of the default grid.

Scorers (coreset pools capped at ``--pool-cap`` patches, funad's default ``POOL_MAX_PATCHES`` unless given
(100 000; 60 000 in the records before session 35), wherever a cap is
named; ``--scale-pool-cap`` multiplies the cap by the patches per image over 256, the 16x16 grid of
224 px, so that a larger input keeps the same share of the training patches in the pool):

* ``patchcore``: every training image, 10 % coreset; ``patchcore_bank20``, ``_bank25``: 20 / 25 %;
* ``knn_trusted_half``: the old default: FUN-AD trains its Local-Net, the bank is a 1 % coreset of
  the lowest-scoring half of the training images (no pool cap, not corroborated);
* ``knn_share90``: the same with the lowest-scoring 90 % and a 10 % coreset of a capped pool;
* ``corroborated``: the knn bank of the default without FUN-AD: every image, corroborated, 10 %,
  vouched for by the other images as they are (the default before corroboration views);
* ``corroborated_rotations``: the same, vouched for also by the other images' three quarter turns
  (``knn_corroboration_views="rotations"``; the turned training images are extracted once, cached);
* ``corroborated_rotations_k2``, ``_k5``, ``_k8``: the same, with the maps floored at the k-th other
  image's distance (``knn_map_corroboration_images``; k = 5 is today's default scorer);
* ``corroborated_eighth_turns_k5``: today's default vouched for by the images turned by every 45
  degrees (``knn_corroboration_views="eighth-turns"``);
* ``corroborated_rotations_k5_share20``, ``_share30``, ``_share50``: ``corroborated_rotations_k5``
  whose floors stay only on the entries of the 20 / 30 / 50 % highest-scoring training images
  (``knn_corroborated_share``); ``corroborated_rotations_k5_share50_bank20``, ``_bank25``: the
  ``_share50`` scorer with a coreset of 20 / 25 % of its pool (``knn_patch_fraction``; 20 % is today's
  default scorer); ``..._bank20_pca64``, ``_pca96``, ``_pca128``: that scorer comparing patches along
  the top 64 / 96 / 128 principal directions of its pool (``knn_components``);
* ``corroborated_rotations_k5_share50_bank20_median_contrast``, ``patchcore_median_contrast``: today's
  default scorer and ``patchcore`` with an image's score its highest patch score minus its median
  one (:class:`MedianContrast`: an offset shared by all of an image's patches cancels);
* ``softpatch``: SoftPatch (15 % of each position's patches dropped by LOF), 10 % coreset;
* ``local_net``, ``blend``: FUN-AD with ``scorer="local_net"`` (the paper's scorer, the trained
  Local-Net) or ``scorer="blend"`` (that and today's knn, each standardised by its training images'
  scores, averaged: :mod:`funad.inference.scorers.blend`);
* ``funad``: ``FunAD()`` as it is today, end to end (``fit_features``, then its ``scorer_``), with the
  probe's pool cap as ``knn_pool_max_patches``.

The FUN-AD scorers also report ``local_net_train_auroc``: the AUROC of the trained Local-Net's
training-image scores against the split's planted (moved) anomalies. A diagnostic that reads
labels: it is only reported and selects nothing.

FunADConfig flags apply too: ``--epochs 2`` shortens the FUN-AD scorers' training for a smoke
run, ``--image-size`` sets both backbones' input (a multiple of 56 suits both; the DINOv2 needs a
multiple of 14); without it each dataset's input side is funad's own choice for each backbone (224 px,
larger for letterboxed photos: ``FunAD.choose_preprocessing``, the pool then scaled as with
``--scale-pool-cap``).
Records are appended to ``--out`` as each finishes, so a stopped run keeps its finished work and
runs of one variant at a time add up; each record names its input size and pool cap, and
``--summary`` prints the mean over seeds, the last record of each (dataset, variant, scorer,
input size, aspect, pool cap, seed) counting::

    python benchmarks/defaults_probe.py ../shared/data/mvtec:bottle ../shared/data/mvtec:screw \\
        ../shared/data/magnetic_tile --seeds 0 --contamination 0.1 --out runs/defaults.jsonl
    python benchmarks/defaults_probe.py --summary runs/defaults.jsonl

Input resolution with the pool scaled to the grid (322 px: a 23x23 grid, a pool of 123 984)::

    python benchmarks/defaults_probe.py ../shared/data/mvtec:screw --image-size 322 --scale-pool-cap \\
        --variants m468 --scorers corroborated patchcore softpatch --out runs/resolution.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from funad.baselines import PatchCore, SoftPatch
from funad.benchmark.datasets import Dataset, load_dataset, parse_dataset
from funad.benchmark.protocol import SETTINGS, Split, make_split
from funad.benchmark.runner import Evaluator  # funad benchmark's evaluation, so the numbers compare
from funad.cli.fit import add_config_options, config_overrides
from funad.config import POOL_MAX_PATCHES, FunADConfig
from funad.features.backbones.base import local_average
from funad.features.backbones.onnx_dinov2 import OnnxDinov2Backbone, packaged_model_path
from funad.features.cache import FeatureCache, default_cache_dir
from funad.features.containers import FeatureSet
from funad.features.extraction import extract_features, place_backbone, resolve_device
from funad.inference.patch_bank import scaled_pool_cap
from funad.inference.scorers.base import PatchScorer
from funad.inference.scorers.knn import CORROBORATION_VIEWS, NearestNeighbourScorer
from funad.metrics import image_auroc
from funad.model import FunAD

logger = logging.getLogger("defaults_probe")

DINO = "imgfocus_dinov2_vits14"
#: The DINOv2's blocks 4, 6 and 8 concatenated: the extraction every derived DINOv2 variant slices.
DINO_BLOCKS = f"{DINO} blocks 4+6+8"
OTHER_BACKBONE = "efficientnet_lite0"
EXTRACTED_BLOCKS = (4, 6, 8)
#: Every record names the pool cap it was measured with, so tables stay reproducible when the default moves.
POOL_CAP = POOL_MAX_PATCHES
#: Patches per image the pool cap is stated for (``--scale-pool-cap``): the 16x16 grid of 224 px.
POOL_CAP_GRID_PATCHES = 16 * 16
#: FunADConfig fields each scorer sets itself (or that would change what is probed).
PROBE_FIELDS = ("backbone", "weights", "level", "seed", "scorer", "synthetic_ratio", "knn_normal_share",
                "knn_patch_fraction", "knn_pool_max_patches", "knn_corroborated")


# --------------------------------------------------------------------------- feature variants


@dataclass(frozen=True)
class DinoVariant:
    """Features of some of the extracted blocks, combined as ``OnnxDinov2Backbone(layers, combine, local_kernel)``
    would."""

    blocks: tuple[int, ...]
    combine: Literal["mean", "concat"] = "mean"
    local_kernel: int = 1
    #: False: each block's final LayerNorm without its learned per-channel scale and shift (blocks averaged).
    norm_affine: bool = True

    def derive(self, extracted: np.ndarray, grid: tuple[int, int] | None = None) -> np.ndarray:
        """fp16 ``[..., D]`` of this variant from ``[..., 3 D]`` (blocks 4, 6, 8 concatenated): patches
        ``[..., K, 3 D]`` on ``grid`` (K cells), or a global feature (no grid: no neighbourhood to average)."""
        per_block = dict(zip(EXTRACTED_BLOCKS, np.split(extracted, len(EXTRACTED_BLOCKS), axis=-1)))
        chosen = [per_block[block] for block in self.blocks]
        # The backbone combines in float32 before the cache stores fp16; so does this.
        if self.combine == "concat":
            combined = np.concatenate(chosen, axis=-1, dtype=np.float32)
        else:
            combined = np.stack(chosen).mean(axis=0, dtype=np.float32)
        if not self.norm_affine:
            # The mean of w * x_k + b over blocks is w * mean(x_k) + b: the scale and shift come off afterwards.
            weight, bias = final_norm_affine()
            combined = (combined - bias) / weight
        if self.local_kernel > 1 and grid is not None:
            cells = torch.from_numpy(combined.reshape(-1, grid[0] * grid[1], combined.shape[-1]))
            averaged = local_average(cells.transpose(1, 2).reshape(len(cells), -1, *grid), self.local_kernel)
            combined = averaged.flatten(2).transpose(1, 2).reshape(combined.shape).numpy()
        return combined.astype(np.float16)


@functools.cache
def final_norm_affine() -> tuple[np.ndarray, np.ndarray]:
    """The DINOv2's final LayerNorm's per-channel scale and shift (float32 ``[D]`` each)."""
    backbone = OnnxDinov2Backbone(packaged_model_path(), layers=EXTRACTED_BLOCKS)
    return backbone.norm_weight.numpy(), backbone.norm_bias.numpy()


DEFAULT_VARIANT = "m468"
#: The variants derived from :data:`DINO_BLOCKS`.
DINO_VARIANTS = {"b4": DinoVariant((4,)), "b6": DinoVariant((6,)), "b8": DinoVariant((8,)),
                 "c68": DinoVariant((6, 8), "concat"),
                 "m468_avg3": DinoVariant((4, 6, 8), local_kernel=3),
                 "m468_no_affine": DinoVariant((4, 6, 8), norm_affine=False)}
COMBINED = f"m468+{OTHER_BACKBONE}"
VARIANTS = (DEFAULT_VARIANT, *DINO_VARIANTS, OTHER_BACKBONE, COMBINED)


def backbones_of(variant: str) -> tuple[str, ...]:
    """The extractions the variant is made of: :data:`DINO` (funad's own), :data:`DINO_BLOCKS` or the other
    backbone."""
    if variant == COMBINED:
        return DINO, OTHER_BACKBONE
    if variant == DEFAULT_VARIANT:
        return (DINO,)
    return (DINO_BLOCKS,) if variant in DINO_VARIANTS else (OTHER_BACKBONE,)


def backbone_of(variant: str) -> str:
    """The backbone whose model sizes and smooths the variant's maps (both backbones take 224 px)."""
    return OTHER_BACKBONE if variant == OTHER_BACKBONE else DINO


def derive_features(features: FeatureSet, variant: DinoVariant) -> FeatureSet:
    return FeatureSet(features.paths, [variant.derive(p, features.grid) for p in features.patches],
                      [variant.derive(g) for g in features.globals_], features.grid)


def unit_rows(array: np.ndarray) -> np.ndarray:
    """float32 rows scaled to norm 1 / sqrt 2: two such parts concatenated have norm 1."""
    array = np.asarray(array, dtype=np.float32)
    return array / (np.sqrt(2.0) * np.maximum(np.linalg.norm(array, axis=-1, keepdims=True), 1e-6))


def area_resample(patches: np.ndarray, source: tuple[int, int], target: tuple[int, int]) -> np.ndarray:
    """``[K, D]`` on ``source`` averaged by area onto ``target`` (torch's adaptive average pooling)."""
    grid = torch.from_numpy(np.asarray(patches, dtype=np.float32)).T.reshape(1, -1, *source)
    pooled = torch.nn.functional.adaptive_avg_pool2d(grid, target)
    return pooled.reshape(pooled.shape[1], -1).T.numpy()


def variant_features(variant: str, extracted: dict[str, FeatureSet]) -> FeatureSet:
    """The variant's features from its backbones' extractions of the same images (by backbone)."""
    if variant == COMBINED:
        return combine_features(extracted[DINO], extracted[OTHER_BACKBONE])
    if variant in DINO_VARIANTS:
        return derive_features(extracted[DINO_BLOCKS], DINO_VARIANTS[variant])
    return extracted[backbones_of(variant)[0]]


def combine_features(dino: FeatureSet, other: FeatureSet) -> FeatureSet:
    """The DINOv2's (``m468``) and EfficientNet-Lite0's patches of the same images, on the DINOv2's grid."""
    assert dino.paths == other.paths
    patches = [np.concatenate([unit_rows(a), unit_rows(area_resample(b, other.grid, dino.grid))], axis=-1)
               .astype(np.float16) for a, b in zip(dino.patches, other.patches)]
    globals_ = [np.concatenate([unit_rows(a), unit_rows(b)]).astype(np.float16)
                for a, b in zip(dino.globals_, other.globals_)]
    return FeatureSet(dino.paths, patches, globals_, dino.grid)


class Extractor:
    """Features from a variant's backbone (the DINOv2 blocks unsliced); the FUN-AD model that sizes and smooths maps.

    ``training_paths``: the dataset's training images, from which each backbone's model chooses its
    preprocessing as funad does (:meth:`with_aspect_of`).
    """

    def __init__(self, settings: dict[str, Any], cache_root: Path | None, random_weights: bool, progress: bool,
                 training_paths: Sequence[Path] = ()):
        self.settings = settings
        self.cache_root = cache_root
        self.random_weights = random_weights
        self.progress = progress
        self.training_paths = list(training_paths)
        self._models: dict[str, FunAD] = {}

    def model(self, variant: str) -> FunAD:
        """The FUN-AD model of the variant's (first) backbone (built once: the evaluation reads its input size)."""
        backbone = backbone_of(variant)
        if backbone not in self._models:
            model = FunAD(pretrained=backbone == DINO or not self.random_weights, cache_dir=self.cache_root or False,
                          progress=self.progress, **self.settings, backbone=backbone)
            self._models[backbone] = model.choose_preprocessing(self.training_paths) if self.training_paths else model
        return self._models[backbone]

    def settings_of(self, variant: str) -> dict[str, Any]:
        """FunADConfig settings of the variant's model, with the preprocessing it chose."""
        return {**self.settings, **self.model(variant).resolved_preprocessing()}

    def with_aspect_of(self, paths: Sequence[Path]) -> Extractor:
        """This extractor for a dataset whose training images are ``paths``: ``aspect`` and ``align`` "auto", and
        without an ``image_size`` the input side, chosen per backbone as funad chooses them
        (:meth:`FunAD.choose_preprocessing`), so that every scorer of the dataset reads the same features."""
        return Extractor(self.settings, self.cache_root, self.random_weights, self.progress, paths)

    def extract(self, backbone: str, paths: list[Path], view: str | None = None) -> FeatureSet:
        """One extraction (:func:`backbones_of`): a backbone's features as funad extracts them, or
        :data:`DINO_BLOCKS`."""
        if backbone == DINO_BLOCKS:
            features = self.extract_dino_blocks(paths, view)
        elif backbone in (DINO, OTHER_BACKBONE):
            features = self.model(backbone).extract(paths, description=backbone, view=view)
        else:
            raise ValueError(f"unknown extraction {backbone!r}: {DINO}, {DINO_BLOCKS} or {OTHER_BACKBONE}")
        if features.failures:
            path, reason = next(iter(features.failures.items()))
            raise ValueError(f"{len(features.failures)} images could not be read (first: {path}: {reason})")
        return features

    def extract_dino_blocks(self, paths: list[Path], view: str | None = None) -> FeatureSet:
        """Blocks 4, 6 and 8 concatenated: one extraction (and one cache) serves every DINOv2 variant."""
        config = FunADConfig(**self.settings_of(DINO))
        backbone = OnnxDinov2Backbone(packaged_model_path(), layers=EXTRACTED_BLOCKS, combine="concat",
                                      image_size=config.image_size)
        backbone.preprocessing = dataclasses.replace(backbone.preprocessing, keep_aspect=config.aspect == "keep",
                                                     align_object=config.align == "object")
        weights_id = self.model(DINO).weights_id()  # as funad's own DINOv2 features are filed
        cache = FeatureCache(self.cache_root, backbone.describe(), weights_id) if self.cache_root else None
        device = resolve_device(config.device)
        return extract_features(place_backbone(backbone, device), paths, cache=cache,
                                batch_size=config.batch_size_extract, num_workers=config.num_workers, device=device,
                                progress=self.progress, description=f"DINOv2 blocks 4+6+8 {view or ''}".strip(),
                                view=view)


# --------------------------------------------------------------------------- scorers


@dataclass
class Training:
    features: FeatureSet
    seed: int
    moved: list[bool]  # the split's planted anomalies: read only by the diagnostic
    funad_settings: dict[str, Any]
    pool_cap: int = POOL_CAP  # of every coreset pool that has a cap


@dataclass
class Fitted:
    scorer: PatchScorer
    local_net_train_auroc: float | None = None


Fitter = Callable[[Training], Fitted]


def bank_scorer(make: Callable[[int, int], PatchScorer]) -> Fitter:
    """A scorer ``make(seed, pool cap)`` fitted on every training image, without FUN-AD."""
    return lambda training: Fitted(make(training.seed, training.pool_cap).fit(
        training.features.method_features("patch")))


def funad_scorer(capped: bool = True, **knn_settings: Any) -> Fitter:
    """FUN-AD fitted with these knn settings (none: today's defaults); its scorer and the Local-Net diagnostic.

    ``capped``: the knn pool is capped at the probe's pool cap; otherwise ``knn_settings`` say.
    """

    def fit(training: Training) -> Fitted:
        cap = {"knn_pool_max_patches": training.pool_cap} if capped else {}
        model = FunAD(cache_dir=False, progress=False, **training.funad_settings, **knn_settings, **cap,
                      seed=training.seed)
        model.fit_features(training.features)
        return Fitted(model.scorer_, local_net_train_auroc(model.train_scores_, training.moved))

    return fit


def local_net_train_auroc(train_scores: np.ndarray, moved: list[bool]) -> float | None:
    """Labels read for a report only; None when nothing was planted."""
    return image_auroc(moved, train_scores) if any(moved) else None


def corroborated_bank(views: str = "none", map_images: int = 1, corroborated_share: float = 1.0,
                      patch_fraction: float = 0.1, components: int | None = None,
                      knn: type[NearestNeighbourScorer] = NearestNeighbourScorer) -> Fitter:
    """The corroborated ``knn`` of every image (a coreset of ``patch_fraction`` of the pool), vouched for in ``views``
    (:data:`CORROBORATION_VIEWS`), its maps by ``map_images`` other images, floors kept for the entries of
    the ``corroborated_share`` of the images that score highest; patches compared along ``components`` principal
    directions (None: all)."""
    return bank_scorer(lambda seed, cap: knn(
        patch_fraction, seed, pool_max_patches=cap, corroborated=True, corroboration_views=CORROBORATION_VIEWS[views],
        map_corroboration_images=map_images, corroborated_share=corroborated_share, components=components))


class MedianContrast(NearestNeighbourScorer):
    """The knn (or, below, PatchCore) whose image score is its highest patch score minus its median patch score.

    The image scores' patch scores (their floors, each image's highest searched exactly), not the maps'.
    A diagnostic of offsets that every patch of an image shares (its capture, not a defect): not saved,
    exported or used by ``funad``.
    """

    def image_scores(self, patches: torch.Tensor, patch_scores: torch.Tensor) -> torch.Tensor:
        return patch_scores.amax(dim=1) - patch_scores.median(dim=1).values


class MedianContrastPatchCore(MedianContrast, PatchCore):
    """``patchcore`` with :class:`MedianContrast`'s image score."""


#: The corroborated scorers: name -> (views, map_corroboration_images, corroborated_share[, patch_fraction[,
#: components[, knn class]]]); docs/accuracy.md, "Corroboration across poses", "Stricter corroboration in the
#: maps" (k = 2, 5, 8 compared), "Corroboration for the highest-scoring half", "A bank of a fifth of the pool",
#: "Principal directions" and "Where the targets stand".
CORROBORATED: dict[str, tuple] = {
    "corroborated": ("none", 1, 1.0),
    "corroborated_rotations": ("rotations", 1, 1.0),
    **{f"corroborated_rotations_k{count}": ("rotations", count, 1.0) for count in (2, 5, 8)},
    "corroborated_eighth_turns_k5": ("eighth-turns", 5, 1.0),
    **{f"corroborated_rotations_k5_share{round(100 * share)}": ("rotations", 5, share) for share in (0.2, 0.3, 0.5)},
    **{f"corroborated_rotations_k5_share50_bank{round(100 * bank)}": ("rotations", 5, 0.5, bank)
       for bank in (0.2, 0.25)},
    **{f"corroborated_rotations_k5_share50_bank20_pca{count}": ("rotations", 5, 0.5, 0.2, count)
       for count in (64, 96, 128)},
    "corroborated_rotations_k5_share50_bank20_median_contrast": ("rotations", 5, 0.5, 0.2, None, MedianContrast),
}
SCORERS: dict[str, Fitter] = {
    "patchcore": bank_scorer(lambda seed, cap: PatchCore(0.1, seed=seed, pool_max_patches=cap)),
    **{f"patchcore_bank{round(100 * bank)}": bank_scorer(
        lambda seed, cap, bank=bank: PatchCore(bank, seed=seed, pool_max_patches=cap)) for bank in (0.2, 0.25)},
    "patchcore_median_contrast": bank_scorer(
        lambda seed, cap: MedianContrastPatchCore(0.1, seed=seed, pool_max_patches=cap)),
    "knn_trusted_half": funad_scorer(capped=False, knn_normal_share=0.5, knn_patch_fraction=0.01,
                                     knn_pool_max_patches=None, knn_corroborated=False),
    "knn_share90": funad_scorer(knn_normal_share=0.9, knn_patch_fraction=0.1, knn_corroborated=False),
    **{name: corroborated_bank(*choice) for name, choice in CORROBORATED.items()},
    "softpatch": bank_scorer(lambda seed, cap: SoftPatch(0.15, 0.1, seed=seed, pool_max_patches=cap)),
    "funad": funad_scorer(),
    "local_net": funad_scorer(scorer="local_net"),
    "blend": funad_scorer(scorer="blend"),
}
#: Scorers whose pool has no cap (their records say pool_cap None).
UNCAPPED = ("knn_trusted_half",)
#: The poses of the training images a scorer's fit reads (``FeatureSet.views``); the others read none.
SCORER_VIEWS = {name: CORROBORATION_VIEWS[views] for name, (views, *_) in CORROBORATED.items() if views != "none"}


def pool_cap_for(cap: int, scale: bool, grid: tuple[int, int]) -> int:
    """``cap``, or with ``scale`` ``cap`` x (patches per image) / 256, rounded down: the same share of the patches."""
    return scaled_pool_cap(cap, grid[0] * grid[1], POOL_CAP_GRID_PATCHES) if scale else cap


# --------------------------------------------------------------------------- probe


def dataset_splits(text: str, args: argparse.Namespace) -> tuple[Path, Dataset, list[Split]]:
    root, category = parse_dataset(text)
    dataset = load_dataset(root, category)
    return root, dataset, [make_split(dataset, args.contamination, seed) for seed in args.seeds]


def probe_dataset(root: Path, dataset: Dataset, splits: list[Split], args: argparse.Namespace,
                  extractor: Extractor) -> None:
    train_paths = list(dict.fromkeys(p for split in splits for p in split.train))
    paths = list(dict.fromkeys(train_paths + [s.path for s in dataset.test]))
    given_side = "image_size" in extractor.settings
    extractor = extractor.with_aspect_of(train_paths)
    views = sorted({view for scorer in args.scorers for view in SCORER_VIEWS.get(scorer, ())})
    extracted: dict[str, FeatureSet] = {}  # by extraction (backbones_of): the derived variants share one
    posed_by_backbone: dict[str, dict[str, FeatureSet]] = {}  # the training images' views (test images need none)
    for variant in args.variants:
        for backbone in backbones_of(variant):
            if backbone not in extracted:
                extracted[backbone] = extractor.extract(backbone, paths)
                posed_by_backbone[backbone] = {view: extractor.extract(backbone, train_paths, view) for view in views}
        features = variant_features(variant, extracted)
        posed = {view: variant_features(variant, {backbone: posed_by_backbone[backbone][view]
                                                  for backbone in backbones_of(variant)}) for view in views}
        model = extractor.model(variant)
        # An input side funad chose for letterboxed images scales the pool as funad's own does (FunAD.pool_cap).
        chosen_side = not given_side and "image_size" in extractor.settings_of(variant)
        pool_cap = pool_cap_for(args.pool_cap, args.scale_pool_cap or chosen_side, features.grid)
        for split in splits:
            # The full split's test sets, whatever share of its training images is kept.
            evaluator = Evaluator(split, SETTINGS, features, model, dataset.has_masks)
            kept = subsample(split, args.train_images)
            train = dataclasses.replace(features.subset(kept.train),
                                        views={view: found.subset(kept.train).patches
                                               for view, found in posed.items()})
            training = Training(train, split.seed, kept.moved, extractor.settings_of(variant), pool_cap)
            for scorer in args.scorers:
                append_record(args.out, {"dataset": dataset.name, "root": str(root), "variant": variant,
                                         "scorer": scorer, "image_size": model.backbone.preprocessing.image_size,
                                         "keep_aspect": model.backbone.preprocessing.keep_aspect,
                                         "align_object": model.backbone.preprocessing.align_object,
                                         "grid": list(features.grid),
                                         "pool_cap": None if scorer in UNCAPPED else pool_cap, **split_facts(kept),
                                         **probe_one(SCORERS[scorer], training, evaluator)})


def subsample(split: Split, count: int | None) -> Split:
    """``count`` of the split's training images at random (seeded by the split's seed); all of them for None."""
    if count is None or count >= len(split.train):
        return split
    keep = np.sort(np.random.default_rng(split.seed).choice(len(split.train), count, replace=False))
    return dataclasses.replace(split, train=[split.train[i] for i in keep], moved=[split.moved[i] for i in keep])


def split_facts(split: Split) -> dict[str, Any]:
    return {"seed": split.seed, "contamination": split.ratio, "num_train": len(split.train),
            "num_moved": int(sum(split.moved))}


def probe_one(fitter: Fitter, training: Training, evaluator: Evaluator) -> dict[str, Any]:
    started = time.perf_counter()
    fitted = fitter(training)
    fit_seconds = time.perf_counter() - started
    metrics, predict_seconds = evaluator.evaluate(fitted.scorer)
    return {**metrics, "local_net_train_auroc": fitted.local_net_train_auroc, "fit_seconds": fit_seconds,
            "predict_seconds": predict_seconds}


def append_record(out: Path, record: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
    images = ", ".join(f"{setting} {record[setting]['image_auroc']:.4f}" for setting in SETTINGS)
    logger.info("%s %s %s %s px, pool %s, seed %d: image AUROC %s (fit %.1f s)", record["dataset"],
                record["variant"], record["scorer"], record["image_size"], record["pool_cap"], record["seed"], images,
                record["fit_seconds"])


# --------------------------------------------------------------------------- summary


def setting_key(record: dict[str, Any]) -> tuple:
    """What a record measured, but for the seed: records written before sizes, caps, aspect and alignment were named
    say None (those images were stretched, not turned)."""
    return (record["dataset"], record["variant"], record["scorer"], record.get("image_size"),
            record.get("keep_aspect", False), record.get("align_object", False), record.get("pool_cap"))


def latest_records(path: Path) -> list[dict[str, Any]]:
    """The records of ``path``; a rerun of one setting and seed replaces the earlier record."""
    records: dict[tuple, dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            records[(*setting_key(record), record["seed"])] = record
    return list(records.values())


COLUMNS = [(f"{setting} {label}", setting, metric) for setting in SETTINGS
           for label, metric in (("image", "image_auroc"), ("pixel", "pixel_auroc"))]


def mean_cell(values: Sequence[float | None], scale: float, digits: int) -> str:
    """The mean of the values present, or "-" where none is (no masks; no Local-Net)."""
    present = [value for value in values if value is not None]
    return f"{scale * np.mean(present):.{digits}f}" if present else "-"


def summary_table(records: list[dict[str, Any]]) -> str:
    """Markdown: one row per (dataset, variant, scorer, input size, aspect, alignment, pool cap), AUROCs in percent,
    means over seeds."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault(setting_key(record), []).append(record)
    header = ["dataset", "variant", "scorer", "px", "aspect", "aligned", "pool cap", "seeds",
              *(name for name, _, _ in COLUMNS), "Local-Net train AUROC", "fit s", "predict s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (dataset, variant, scorer, size, keep_aspect, align_object, cap), members in groups.items():
        cells = [dataset, variant, scorer, "-" if size is None else str(size), "kept" if keep_aspect else "stretched",
                 "yes" if align_object else "no", "-" if cap is None else str(cap), str(len(members))]
        cells += [mean_cell([r[setting].get(metric) for r in members], 100, 2) for _, setting, metric in COLUMNS]
        cells.append(mean_cell([r["local_net_train_auroc"] for r in members], 100, 2))
        cells += [mean_cell([r[key] for r in members], 1, 1) for key in ("fit_seconds", "predict_seconds")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="*", metavar="DATASET", help="ROOT or ROOT:CATEGORY, as for funad benchmark")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--scorers", nargs="+", choices=tuple(SCORERS), default=list(SCORERS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--contamination", type=float, default=0.1)
    parser.add_argument("--train-images", type=int, default=None, metavar="N",
                        help="train on N of each split's training images, drawn at random (a small factory set); "
                             "evaluated on the full split's test sets. Records replace full-size ones in one "
                             "--summary: give them their own --out")
    parser.add_argument("--pool-cap", type=int, default=POOL_CAP, metavar="N",
                        help=f"most patches in each capped coreset pool (default {POOL_CAP})")
    parser.add_argument("--scale-pool-cap", action="store_true",
                        help=f"multiply --pool-cap by the patches per image over {POOL_CAP_GRID_PATCHES} (the 16x16 "
                             f"grid of 224 px): the same share of the training patches at any input size")
    parser.add_argument("--out", type=Path, help="JSON lines file the records are appended to")
    parser.add_argument("--summary", type=Path, metavar="FILE", help="print the Markdown table of FILE's records")
    parser.add_argument("--cache-dir", type=Path, default=None, help="feature cache (default ~/.cache/funad/features)")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    parser.add_argument("--random-weights", action="store_true",
                        help=f"{OTHER_BACKBONE} with random weights, never cached (smoke runs and tests; "
                             f"the DINOv2 ONNX graph has none)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-record lines")
    add_config_options(parser)
    args = parser.parse_args(argv)
    if args.summary is None and not (args.datasets and args.out):
        parser.error("give DATASET... and --out FILE, or --summary FILE")
    if args.pool_cap < 1:
        parser.error("--pool-cap must be >= 1")
    owned = [name for name in PROBE_FIELDS if hasattr(args, name)]
    if owned:
        parser.error(f"the probe sets {', '.join(owned)} itself (use --seeds for seeds)")
    return args


def prepare_run(args: argparse.Namespace,
                run_logger: logging.Logger) -> tuple[Extractor, list[tuple[Path, Dataset, list[Split]]]]:
    """Logging, the feature extractor and every dataset's splits of a probe run (this script's or another's).

    Every dataset is read and split first, so that a mistake in the last fails before any extraction.
    """
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    run_logger.setLevel(logging.WARNING if args.quiet else logging.INFO)
    cache_root = None if args.no_cache else args.cache_dir or default_cache_dir()
    extractor = Extractor(config_overrides(args), cache_root, args.random_weights, not args.quiet)
    return extractor, [dataset_splits(text, args) for text in args.datasets]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_arguments(argv)
    if args.summary is not None:
        print(summary_table(latest_records(args.summary)))
        return 0
    extractor, datasets = prepare_run(args, logger)
    for root, dataset, splits in datasets:
        probe_dataset(root, dataset, splits, args, extractor)
    return 0


if __name__ == "__main__":
    sys.exit(main())
