"""What ``funad benchmark`` runs and how its peers are set up: plain dataclasses, no numpy or torch, so that
the command line reads its options and their defaults from here without slowing ``funad --help``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from funad.config import setting

METHODS = ("funad", "funad*", "patchcore", "softpatch")
#: The protocol's two test sets (:meth:`funad.benchmark.protocol.Split.test_set`).
SETTINGS = ("no-overlap", "overlap")
#: ``label_recall`` / ``label_false_alarm_rate``: the shares of anomalous / good test images that funad's label-free
#: threshold labels anomalous (the labels ``funad predict`` writes); the peers have no threshold.
METRICS = ("image_auroc", "pixel_auroc", "aupro", "image_f1_max", "label_recall", "label_false_alarm_rate")


@dataclass
class PeerSettings:
    """FUN-AD* and the baselines beside funad; each field is a ``funad benchmark --flag``."""

    funad_star_ratio: float = setting(0.05, "FUN-AD*'s synthetic anomaly ratio")
    coreset_fraction: float = setting(0.1, "PatchCore's and SoftPatch's coreset share")
    softpatch_noise: float = setting(0.15, "SoftPatch's dropped share per position")
    patchcore_reweight: bool = setting(False, "PatchCore's image-score reweighting")

    def __post_init__(self) -> None:
        if not 0.0 <= self.funad_star_ratio <= 1.0:
            raise ValueError(f"funad_star_ratio must lie in [0, 1], got {self.funad_star_ratio}")
        if not 0.0 < self.coreset_fraction <= 1.0:
            raise ValueError(f"coreset_fraction must lie in (0, 1], got {self.coreset_fraction}")
        if not 0.0 <= self.softpatch_noise < 1.0:
            raise ValueError(f"softpatch_noise must lie in [0, 1), got {self.softpatch_noise}")


@dataclass
class BenchmarkOptions:
    methods: tuple[str, ...] = METHODS
    settings: tuple[str, ...] = SETTINGS
    funad_config: dict = field(default_factory=dict)  # FunADConfig fields for funad and funad*
    peers: PeerSettings = field(default_factory=PeerSettings)
    cache_dir: Path | bool | None = None
    progress: bool = False
