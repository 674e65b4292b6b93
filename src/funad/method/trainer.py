"""The FUN-AD training loop: one iteration = IRMB, pseudo-labels, noise, mutual pairs, loss, step."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from funad.config import FunADConfig
from funad.features.containers import MethodFeatures
from funad.method.local_net import LocalNet
from funad.method.losses import balanced_bce, mutual_smoothness
from funad.method.memory_bank import MemoryBank, build_memory_bank
from funad.method.neighbours import mutual_pairs, nearest_other_point
from funad.method.pseudo_labels import assign_pseudo_labels, noise_scale, perturb
from funad.utils import distributed

logger = logging.getLogger(__name__)


@dataclass
class EpochRecord:
    epoch: int
    loss: float
    anomalous_label_fraction: float
    ambiguous_label_fraction: float
    candidate_normal_fraction: float


@dataclass
class TrainingState:
    """Everything a run needs to continue exactly where it stopped."""

    local_net: LocalNet
    optimizer: torch.optim.Optimizer
    rng: np.random.Generator
    generator: torch.Generator
    epoch: int = 0
    history: list[EpochRecord] = field(default_factory=list)


def make_state(config: FunADConfig, dim: int, device: torch.device) -> TrainingState:
    """A fresh run: Local-Net initialised from ``config.seed``, the RNGs the run draws from seeded.

    The initialisation draws from torch's global RNG (as ``nn.Linear`` does), seeded inside
    ``fork_rng`` so that the caller's own global random sequence is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        local_net = LocalNet(dim, config.head_hidden, config.leaky_slope)
    local_net.to(device)
    optimizer = torch.optim.RMSprop(local_net.parameters(), lr=config.learning_rate, momentum=config.momentum)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    return TrainingState(local_net, optimizer, np.random.default_rng(config.seed), generator)


class Trainer:
    def __init__(self, config: FunADConfig, features: MethodFeatures, device: torch.device):
        self.config = config
        self.features = features
        self.device = device

    def _bank(self, state: TrainingState) -> MemoryBank:
        c = self.config
        return build_memory_bank(state.local_net, self.features, tau_m=c.tau_m, image_ratio=c.bank_image_ratio,
                                 patch_fraction=c.bank_patch_fraction, rng=state.rng, device=self.device,
                                 max_entries=c.bank_max_patches)

    def _positions(self, state: TrainingState) -> np.ndarray | None:
        """The same random patch positions for every image of a batch (the noise scale needs them aligned)."""
        count = self.config.patches_per_image
        if count is None or count >= self.features.num_patches:
            return None
        return np.sort(state.rng.choice(self.features.num_patches, count, replace=False))

    def step(self, state: TrainingState, image_ids: np.ndarray, bank: MemoryBank) -> tuple[float, float, float]:
        """One iteration on the batch ``image_ids``.

        Data parallel (:mod:`funad.utils.distributed`): every rank draws the same batch, positions
        and noise, runs the Local-Net on its block of the batch's images only, and gathers the
        other ranks' rows, so the pseudo-labels (min-max over the whole batch), the mutual pairs
        and the loss (means over the whole batch) are the single-process ones. Each rank's
        gradient flows through its own rows; their sum is the single-process gradient.
        """
        c = self.config
        net = state.local_net
        raw = self.features.take(image_ids, self._positions(state)).to(self.device)  # [B, P, D]
        flat = raw.reshape(-1, raw.shape[-1])
        query_ids = torch.as_tensor(image_ids, device=self.device).repeat_interleave(raw.shape[1])
        mine = distributed.block(len(image_ids))
        rows = range(mine.start * raw.shape[1], mine.stop * raw.shape[1])
        sizes = [size * raw.shape[1] for size in distributed.block_sizes(len(image_ids))]

        local_adapted = net.adapt(flat[rows.start:rows.stop])
        distances = distributed.gather_rows(
            bank.nearest_distance(local_adapted.detach(), query_ids[rows.start:rows.stop], squared=c.squared_distances),
            sizes)
        labels = assign_pseudo_labels(distances, c.tau_n, c.tau_a)
        logits = distributed.gather_rows(net.logits(local_adapted), sizes)

        confident = labels.anomalous & ~labels.ambiguous if c.feature_noise else labels.anomalous
        anomalous_logits = logits[confident]
        if c.feature_noise and labels.ambiguous.any():
            # Noise goes into a copy used only by the loss branch; the clean features stay clean.
            # Every rank draws the noise of the whole batch, which keeps the ranks' generators in step.
            noisy = perturb(flat[labels.ambiguous], noise_scale(raw), state.generator)
            counts = [int(labels.ambiguous[start:start + size].sum())
                      for start, size in zip(np.cumsum([0] + sizes[:-1]), sizes)]
            first = int(labels.ambiguous[:rows.start].sum())
            local_noisy = noisy[first:first + counts[distributed.rank()]]
            anomalous_logits = torch.cat([anomalous_logits,
                                          distributed.gather_rows(net.logits(net.adapt(local_noisy)), counts)])
        loss = balanced_bce(anomalous_logits, logits[~labels.anomalous])
        if c.mutual_smoothness and c.lambda_ms > 0:
            adapted = distributed.gather_rows(local_adapted.detach(), sizes)
            pairs = mutual_pairs(distributed.gather_rows(nearest_other_point(adapted, rows), sizes))
            loss = loss + c.lambda_ms * mutual_smoothness(torch.sigmoid(logits), pairs)

        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]  # torch's stubs leave it untyped
        distributed.sum_gradients(list(net.parameters()))
        state.optimizer.step()
        return loss.item(), labels.anomalous.float().mean().item(), labels.ambiguous.float().mean().item()

    def run_epoch(self, state: TrainingState) -> EpochRecord:
        c = self.config
        order = state.rng.permutation(len(self.features))
        batches = [order[i:i + c.batch_size] for i in range(0, len(order), c.batch_size)]
        if len(batches) > 1 and len(batches[-1]) < 2:  # the noise scale needs two images
            batches[-2] = np.concatenate(batches[-2:])
            batches.pop()
        bank = None
        totals = np.zeros(3)
        for batch in batches:
            if bank is None or c.bank_rebuild == "iteration":
                bank = self._bank(state)
            totals += self.step(state, batch, bank)
        state.epoch += 1
        loss, anomalous, ambiguous = totals / len(batches)
        assert bank is not None  # an epoch has at least one batch
        record = EpochRecord(state.epoch, loss, anomalous, ambiguous, float(bank.candidate_normals.mean()))
        state.history.append(record)
        return record

    def fit(self, state: TrainingState, *, progress: bool = True,
            on_epoch_end: Callable[[TrainingState], None] | None = None) -> TrainingState:
        """Train until ``config.epochs``: a fixed schedule, chosen without any label (docs/accuracy.md)."""
        bar = tqdm(total=self.config.epochs, initial=state.epoch, desc="training", unit="epoch", disable=not progress)
        while state.epoch < self.config.epochs:
            record = self.run_epoch(state)
            logger.debug("epoch %d: %s", record.epoch, record)
            bar.set_postfix(loss=f"{record.loss:.4f}", normals=f"{record.candidate_normal_fraction:.2f}")
            bar.update(1)
            if on_epoch_end:
                on_epoch_end(state)
        bar.close()
        return state

    def final_bank(self, state: TrainingState) -> MemoryBank:
        """The bank the trained Local-Net implies: its candidate normals are the images judged normal."""
        return self._bank(state)
