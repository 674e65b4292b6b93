"""Everything ``FunAD.fit`` learns, in one dataclass, and its form as plain tensors plus JSON.

:mod:`funad.persistence` writes that form to a model directory and reads it back; nothing
outside this module knows how a fitted model is laid out in tensors.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from funad.inference.scorers.base import PatchScorer, ScorerState
from funad.inference.scorers.registry import scorer_from_state
from funad.method.local_net import LocalNet
from funad.method.trainer import EpochRecord
from funad.utils.tensors import under_prefix, with_prefix

_SCORER = "scorer."


@dataclass
class FittedState:
    scorer: PatchScorer  # what predict scores patches with (config.scorer)
    local_net: LocalNet  # the trained Local-Net
    train_paths: list[Path]  # the real training images, absolute (FUN-AD*'s synthetic ones left out)
    train_digests: list[str]  # SHA-256 of each training image's file ("" if unknown)
    train_scores: np.ndarray  # float64 [N]: each training image's final Local-Net score
    train_predict_scores: np.ndarray  # float64 [N]: the same images in the units predict outputs
    judged_normal: np.ndarray  # bool [N]: the images the final memory bank treats as normal
    threshold: float  # label-free: a predict score above it is anomalous
    pixel_threshold: float  # label-free: a map pixel above it is part of a defect region
    contamination: float  # estimated share of anomalous training images
    history: list[EpochRecord]  # per-epoch training statistics
    world_size: int = 1  # the processes that shared extraction and training (torchrun's ranks)

    def to_saved(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Tensors (for safetensors) and JSON that :meth:`from_saved` turns back into this state."""
        scorer = self.scorer.state_dict()
        tensors = with_prefix(LocalNet.STATE_PREFIX, self.local_net.tensors()) | with_prefix(_SCORER, scorer.tensors)
        tensors["train_scores"] = torch.from_numpy(np.asarray(self.train_scores, dtype=np.float64))
        tensors["train_predict_scores"] = torch.from_numpy(np.asarray(self.train_predict_scores, dtype=np.float64))
        tensors["judged_normal"] = torch.from_numpy(np.asarray(self.judged_normal, dtype=np.uint8))
        info = {
            "scorer": {"name": self.scorer.name, "settings": scorer.settings},
            "local_net": self.local_net.architecture(),
            "train_paths": [str(path) for path in self.train_paths],
            "train_digests": list(self.train_digests),
            "threshold": float(self.threshold),
            "pixel_threshold": float(self.pixel_threshold),
            "contamination": float(self.contamination),
            "history": [asdict(record) for record in self.history],
            "world_size": self.world_size,
        }
        return tensors, info

    @classmethod
    def from_saved(cls, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> FittedState:
        """The state :meth:`to_saved` wrote; KeyError, TypeError or ValueError if it does not fit together."""

        scorer = info["scorer"]
        local_net = LocalNet.from_state(under_prefix(LocalNet.STATE_PREFIX, tensors), info["local_net"])
        scorer_state = ScorerState(under_prefix(_SCORER, tensors), scorer["settings"])
        return cls(
            scorer=scorer_from_state(scorer["name"], scorer_state, local_net),
            local_net=local_net,
            train_paths=[Path(path) for path in info["train_paths"]],
            train_digests=[str(digest) for digest in info["train_digests"]],
            train_scores=tensors["train_scores"].numpy(),
            train_predict_scores=tensors["train_predict_scores"].numpy(),
            judged_normal=tensors["judged_normal"].numpy().astype(bool),
            threshold=float(info["threshold"]),
            pixel_threshold=float(info["pixel_threshold"]),
            contamination=float(info["contamination"]),
            history=[EpochRecord(**record) for record in info["history"]],
            world_size=int(info.get("world_size", 1)),  # absent from models saved before torchrun support
        )
