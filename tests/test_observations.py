"""The paper's two observations (section 3) on synthetic Gaussians, and the pseudo-labelling built on them."""

import numpy as np
import torch

from funad.method.memory_bank import MemoryBank
from funad.method.neighbours import mutual_pairs, nearest_other_point
from funad.method.pseudo_labels import assign_pseudo_labels


def _planted(seed: int, normals: int = 450, anomalies: int = 50, dim: int = 16):
    """Normals: one tight Gaussian. Anomalies: spread out (larger variance), as the method assumes."""
    rng = np.random.default_rng(seed)
    normal = rng.normal(0.0, 1.0, (normals, dim))
    anomalous = rng.normal(0.0, 4.0, (anomalies, dim))
    features = torch.tensor(np.concatenate([normal, anomalous]), dtype=torch.float32)
    labels = np.r_[np.zeros(normals, bool), np.ones(anomalies, bool)]
    return features, labels


def test_normal_pairs_are_the_closest_on_average():
    features, labels = _planted(0)
    distances = torch.cdist(features, features).numpy()
    off_diagonal = ~np.eye(len(labels), dtype=bool)
    normal_normal = distances[np.ix_(~labels, ~labels)][off_diagonal[np.ix_(~labels, ~labels)]].mean()
    normal_anomaly = distances[np.ix_(~labels, labels)].mean()
    anomaly_anomaly = distances[np.ix_(labels, labels)][off_diagonal[np.ix_(labels, labels)]].mean()
    assert normal_normal < normal_anomaly < anomaly_anomaly


def test_mutually_nearest_pairs_are_mostly_homogeneous():
    for seed in range(3):
        features, labels = _planted(seed)
        pairs = mutual_pairs(nearest_other_point(features)).numpy()
        assert len(pairs) > 50
        homogeneous = labels[pairs[:, 0]] == labels[pairs[:, 1]]
        assert homogeneous.mean() > 0.9
        # pairs are unique and mutual
        assert len({tuple(p) for p in pairs}) == len(pairs)
        assert (pairs[:, 0] < pairs[:, 1]).all()


def test_mutual_pairs_are_mutual_nearest_neighbours():
    features, _ = _planted(1, normals=60, anomalies=10)
    distances = torch.cdist(features, features).pow(2)
    distances.fill_diagonal_(float("inf"))
    nearest = distances.argmin(1)
    for i, j in mutual_pairs(nearest_other_point(features)).tolist():
        assert nearest[i] == j and nearest[j] == i


def test_pseudo_labels_mark_most_planted_anomalies():
    """IRMB distances (bank of other images' patches), min-max normalised, thresholded at tau_n."""
    rng = np.random.default_rng(0)
    images, patches, dim = 40, 16, 16
    features = rng.normal(0.0, 1.0, (images, patches, dim))
    planted = np.zeros((images, patches), bool)
    planted[:4, :4] = True  # 10 % of the images are contaminated, 4 defective patches each
    directions = rng.normal(size=(16, dim))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    features[planted] = rng.normal(0.0, 0.5, (16, dim)) + 8.0 * directions  # far, each its own way
    bank_images = np.sort(rng.choice(images, images // 2, replace=False))  # contaminated like the set
    bank = MemoryBank(
        features=torch.tensor(features[bank_images].reshape(-1, dim), dtype=torch.float32),
        image_ids=torch.as_tensor(bank_images).repeat_interleave(patches),
        bank_images=bank_images, candidate_normals=np.ones(images, bool), image_scores=np.zeros(images),
    )
    queries = torch.tensor(features.reshape(-1, dim), dtype=torch.float32)
    distances = bank.nearest_distance(queries, torch.arange(images).repeat_interleave(patches), squared=True)
    pseudo = assign_pseudo_labels(distances, tau_n=0.5, tau_a=0.9)
    labels = pseudo.anomalous.numpy().reshape(images, patches)
    assert labels[planted].mean() > 0.75
    assert labels[~planted].mean() < 0.01
    # the ambiguous band is a subset of the anomalous labels
    assert not (pseudo.ambiguous & ~pseudo.anomalous).any()
