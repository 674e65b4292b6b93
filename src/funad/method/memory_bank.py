"""IRMB: the iteratively re-constructed memory bank (docs/method.md, step 1)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from funad.features.containers import MethodFeatures
from funad.method.local_net import LocalNet
from funad.method.neighbours import nearest_neighbour
from funad.method.pseudo_labels import min_max_normalise
from funad.utils import distributed
from funad.utils.shares import share_count


@dataclass
class MemoryBank:
    features: torch.Tensor  # adapted features a(p), [M, D]
    image_ids: torch.Tensor  # the training image each entry comes from, [M]
    bank_images: np.ndarray  # indices of the images in the bank (R)
    candidate_normals: np.ndarray  # bool [N]: normalised image score below tau_m (C)
    image_scores: np.ndarray  # [N] max patch score of every training image

    def nearest_distance(self, queries: torch.Tensor, query_image_ids: torch.Tensor, squared: bool) -> torch.Tensor:
        """Distance of each adapted query to its nearest bank entry from another image."""
        distances, _ = nearest_neighbour(queries, self.features, query_image_ids, self.image_ids)
        return distances if squared else distances.sqrt()


@torch.no_grad()
def image_scores(local_net: LocalNet, features: MethodFeatures, device: torch.device, chunk: int = 32) -> np.ndarray:
    """Image score = max of its patch scores, for every image."""
    scores = []
    for start in range(0, len(features), chunk):
        batch = features.take(range(start, min(start + chunk, len(features)))).to(device)
        scores.append(local_net.score(batch).amax(dim=1).cpu())
    return torch.cat(scores).numpy()


def select_candidate_normals(scores: np.ndarray, tau_m: float) -> np.ndarray:
    """C = {i : minmax(score)_i < tau_m}. Identical scores (zero range) make every image a candidate."""
    return min_max_normalise(torch.from_numpy(scores)).numpy() < tau_m


@torch.no_grad()
def build_memory_bank(
    local_net: LocalNet,
    features: MethodFeatures,
    *,
    tau_m: float,
    image_ratio: float,
    patch_fraction: float,
    rng: np.random.Generator,
    device: torch.device,
    max_entries: int | None = None,
) -> MemoryBank:
    """Score all images, take a random share of the candidate normals, bank their adapted patches.

    ``patch_fraction`` < 1 keeps a random subset of each bank image's patches (a CPU lever; the
    paper keeps all). ``max_entries`` caps the bank by keeping fewer patches per bank image, so
    that the cost of a search stays constant as the training set grows (docs/speed.md).
    """
    # Each rank scores and adapts its block of the images; the same random draws on every rank
    # then give every rank the same bank (the one a single process builds).
    mine = distributed.block(len(features))
    scores = distributed.gather_rows(
        torch.from_numpy(image_scores(local_net, MethodFeatures(features.arrays[mine.start:mine.stop]), device)),
        distributed.block_sizes(len(features))).numpy()
    candidates = select_candidate_normals(scores, tau_m)
    candidate_ids = np.flatnonzero(candidates)
    count = share_count(image_ratio, len(candidate_ids))
    bank_images = np.sort(rng.choice(candidate_ids, size=min(count, len(candidate_ids)), replace=False))
    per_image = share_count(patch_fraction, features.num_patches)
    if max_entries is not None:
        per_image = max(1, min(per_image, max_entries // len(bank_images)))
    positions = features.random_positions(len(bank_images), per_image, rng)
    per_image = min(per_image, features.num_patches)
    mine = distributed.block(len(bank_images))
    raw = features.take_rows(bank_images[mine.start:mine.stop], positions[mine.start:mine.stop]).to(device)
    adapted = distributed.gather_rows(local_net.adapt(raw.reshape(-1, features.dim)),
                                      [size * per_image for size in distributed.block_sizes(len(bank_images))])
    return MemoryBank(
        features=adapted,
        image_ids=torch.as_tensor(bank_images, device=device).repeat_interleave(per_image),
        bank_images=bank_images,
        candidate_normals=candidates,
        image_scores=scores,
    )
