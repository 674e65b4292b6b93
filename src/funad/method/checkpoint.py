"""Training checkpoints: a killed run continues from its last finished epoch, with the same result.

A checkpoint folder holds ``checkpoint.json`` (format version, the run's identity, epoch,
history, the numpy RNG state, the optimizer's hyperparameters, the name and SHA-256 of the
tensor file) and ``epoch-NNNNN.safetensors`` (Local-Net weights, optimizer buffers, the run's
torch generator state). Both are written under a temporary name and renamed into place, the JSON
last: its rename is the commit point, so a kill at any moment leaves the previous checkpoint
or the new one, never a mix. No pickle.

Restoring at an epoch boundary reproduces an uninterrupted run exactly because nothing else
carries over from one epoch to the next: the memory bank is rebuilt from the Local-Net and the
numpy RNG at the start of every epoch, the feature noise draws from the run's torch generator,
and the features are fixed (their digest is part of the run's identity).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from funad.config import FunADConfig
from funad.features.containers import FeatureSet
from funad.method.trainer import EpochRecord, TrainingState
from funad.utils import distributed
from funad.utils.files import file_digest, json_digest, read_versioned_json, write_atomically, write_text_atomically
from funad.utils.tensors import under_prefix, with_prefix

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT_VERSION = 1
MANIFEST = "checkpoint.json"
_OPTIMIZER = "optimizer."

# Settings that change speed only, never what is computed; a resumed run may change them.
_SPEED_ONLY_SETTINGS = ("num_workers", "batch_size_extract")


class CheckpointError(ValueError):
    """A checkpoint that is corrupt, from another funad version, or from a different run."""


def training_identity(config: FunADConfig, image_paths: Sequence[Path], features: FeatureSet,
                      backbone: dict[str, Any], weights_id: str | None) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: settings, image list, backbone, feature values.

    The feature digest catches an image file replaced under the same name and features
    recomputed differently (another preprocessing, or a non-deterministic GPU extraction
    without the cache), either of which would make the resumed result differ.
    """
    settings = {k: v for k, v in config.to_dict().items() if k not in _SPEED_ONLY_SETTINGS}
    feature_digest = hashlib.sha256()
    for patches, global_ in zip(features.patches, features.globals_):
        feature_digest.update(np.ascontiguousarray(patches).tobytes())
        feature_digest.update(np.ascontiguousarray(global_).tobytes())
    return {
        "configuration": json_digest(settings),
        "training images": json_digest([str(Path(p).resolve()) for p in image_paths]),
        "backbone": json_digest({"backbone": backbone, "weights": weights_id}),
        "features": feature_digest.hexdigest(),
    }


class TrainingCheckpoint:
    """Saves a :class:`TrainingState` after every epoch into ``folder`` and restores it.

    With ``resume`` a valid checkpoint in ``folder`` is continued; without it training starts
    from epoch 0 and the first save replaces whatever an earlier run left there.
    """

    def __init__(self, folder: str | Path, *, resume: bool):
        self.folder = Path(folder)
        self.resume = resume
        self.identity: dict[str, Any] | None = None

    def has_checkpoint(self) -> bool:
        """Whether ``folder`` holds a saved epoch that ``resume`` would continue from."""
        return (self.folder / MANIFEST).exists()

    # ----------------------------------------------------------------- restoring
    def start(self, state: TrainingState, identity: dict[str, Any]) -> TrainingState:
        """``state`` (fresh from ``make_state``) advanced to the checkpoint when resuming."""
        self.identity = identity
        if not self.has_checkpoint():
            if self.resume:
                logger.warning("no checkpoint in %s yet: training starts from epoch 0", self.folder)
            return state
        if not self.resume:
            logger.warning("starting a new run: the checkpoint an earlier run left in %s will be replaced "
                           "(resume it with --resume / resume=True)", self.folder)
            return state
        manifest = self._read_manifest()
        changed = [part for part, digest in identity.items() if manifest["identity"].get(part) != digest]
        if changed:
            raise CheckpointError(
                f"{self.folder}: this checkpoint belongs to a different run (changed: {', '.join(changed)}); "
                f"drop --resume to start over, or delete {self.folder}")
        self._restore(state, manifest)
        logger.info("resuming from the checkpoint in %s after epoch %d", self.folder, state.epoch)
        return state

    def _read_manifest(self) -> dict[str, Any]:
        return read_versioned_json(self.folder / MANIFEST, CHECKPOINT_FORMAT_VERSION, CheckpointError,
                                   kind="checkpoint", advice=f"delete {self.folder} to start over")

    def _restore(self, state: TrainingState, manifest: dict[str, Any]) -> None:
        tensor_path = self.folder / str(manifest.get("tensors"))
        if not tensor_path.is_file() or file_digest(tensor_path) != manifest.get("tensors_sha256"):
            raise CheckpointError(f"{tensor_path}: missing or altered (checksum mismatch); "
                                  f"delete {self.folder} to start over")
        try:
            _load_parts(state, load_file(str(tensor_path)), manifest)
        except (SafetensorError, RuntimeError, KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"{self.folder}: checkpoint does not fit this model ({error}); "
                                  f"delete {self.folder} to start over") from error

    # ----------------------------------------------------------------- saving
    def saving_after(self, on_epoch_end: Callable[[TrainingState], None] | None,
                     ) -> Callable[[TrainingState], None]:
        """An epoch-end callback that saves first, then runs ``on_epoch_end`` (if any)."""
        def callback(state: TrainingState) -> None:
            self.save(state)
            if on_epoch_end:
                on_epoch_end(state)
        return callback

    def save(self, state: TrainingState) -> None:
        if self.identity is None:
            raise RuntimeError("TrainingCheckpoint.start() must be called before save()")
        self.folder.mkdir(parents=True, exist_ok=True)
        tensors, info = _state_parts(state)
        name = f"epoch-{state.epoch:05d}.safetensors"
        write_atomically(self.folder / name, lambda handle: handle.write(save(tensors)))
        manifest = {
            "format_version": CHECKPOINT_FORMAT_VERSION,
            "identity": self.identity,
            **info,
            "tensors": name,
            "tensors_sha256": file_digest(self.folder / name),
        }
        write_text_atomically(self.folder / MANIFEST, json.dumps(manifest))
        for leftover in self.folder.iterdir():  # older epochs and temporaries of a killed save
            if leftover.name not in (MANIFEST, name):
                leftover.unlink()


def broadcast_state(state: TrainingState) -> None:
    """Rank 0's training state on every rank (a no-op in one process): a run that rank 0 resumed from
    its checkpoint continues from it everywhere, with no checkpoint files needed on the other machines."""
    if distributed.world_size() == 1:
        return
    tensors, info = distributed.broadcast_object(_state_parts(state) if distributed.is_main() else None)
    _load_parts(state, tensors, info)


def _state_parts(state: TrainingState) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``state`` as CPU tensors (weights, optimizer buffers, torch generator) and JSON (the rest)."""
    tensors = with_prefix(state.local_net.STATE_PREFIX, state.local_net.tensors())
    optimizer_tensors, optimizer_rest = _split_optimizer_state(state.optimizer.state_dict())
    tensors.update(optimizer_tensors)
    tensors["torch_generator"] = state.generator.get_state()
    info = {
        "epoch": state.epoch,
        "history": [asdict(record) for record in state.history],
        "numpy_rng": state.rng.bit_generator.state,
        "optimizer": optimizer_rest,
    }
    return tensors, info


def _load_parts(state: TrainingState, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    """Set ``state`` to what :func:`_state_parts` returned."""
    # in place: the optimizer holds the parameters
    state.local_net.load_state_dict(under_prefix(state.local_net.STATE_PREFIX, tensors))
    state.optimizer.load_state_dict(_optimizer_state_from(tensors, info["optimizer"]))
    state.generator.set_state(tensors["torch_generator"])
    state.rng.bit_generator.state = info["numpy_rng"]
    state.epoch = int(info["epoch"])
    state.history = [EpochRecord(**record) for record in info["history"]]


def _split_optimizer_state(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors (``optimizer.<param>.<buffer>``) for safetensors; hyperparameters and numbers for JSON."""
    tensors: dict[str, torch.Tensor] = {}
    numbers: dict[str, Any] = {}
    for index, buffers in state_dict["state"].items():
        for name, value in buffers.items():
            (tensors if isinstance(value, torch.Tensor) else numbers)[f"{index}.{name}"] = value
    return with_prefix(_OPTIMIZER, tensors), {"param_groups": state_dict["param_groups"], "numbers": numbers}


def _optimizer_state_from(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    entries = list(under_prefix(_OPTIMIZER, tensors).items())
    state: dict[int, dict[str, Any]] = {}
    for key, value in entries + list(rest["numbers"].items()):
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": rest["param_groups"]}
