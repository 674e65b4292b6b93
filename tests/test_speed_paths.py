"""The fast paths give the same results as the plain ones (no timing here: see benchmarks/speed.py)."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from funad.features.containers import MethodFeatures
from funad.method.local_net import LocalNet
from funad.method.memory_bank import build_memory_bank
from funad.method.neighbours import _matmul_nearest, nearest_neighbour, nearest_other_point


def _grouped_points(seed: int, images: int, per_image: int, dim: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    points = torch.randn(images * per_image, dim, generator=generator)
    return points, torch.arange(images).repeat_interleave(per_image)


@pytest.mark.parametrize("query_images", [range(0, 4), range(8, 12), range(20, 24)])
def test_faiss_search_with_image_exclusion_equals_exact_matmul(query_images):
    keys, key_groups = _grouped_points(0, images=20, per_image=15)
    queries, _ = _grouped_points(1, images=4, per_image=30)
    query_groups = torch.tensor(list(query_images)).repeat_interleave(30)  # some, all or none in the bank

    distances, indices = nearest_neighbour(queries, keys, query_groups, key_groups)
    expected_distances, expected_indices = _matmul_nearest(queries, keys, query_groups, key_groups)

    assert torch.equal(indices, expected_indices)
    torch.testing.assert_close(distances, expected_distances, rtol=1e-5, atol=1e-4)
    assert (key_groups[indices] != query_groups).all()


def test_matmul_search_equals_the_full_distance_matrix_in_several_blocks(monkeypatch):
    import funad.method.neighbours as neighbours

    keys, key_groups = _grouped_points(2, images=10, per_image=12)
    queries, query_groups = _grouped_points(3, images=10, per_image=7)
    monkeypatch.setattr(neighbours, "BLOCK_ELEMENTS", 5 * len(keys))  # 5 query rows per block
    distances, indices = _matmul_nearest(queries, keys, query_groups, key_groups)

    full = torch.cdist(queries, keys).pow(2).masked_fill(query_groups[:, None] == key_groups[None], float("inf"))
    expected_distances, expected_indices = full.min(dim=1)
    assert torch.equal(indices, expected_indices)
    torch.testing.assert_close(distances, expected_distances, rtol=1e-5, atol=1e-4)


def test_search_without_groups_and_without_admissible_keys():
    keys, key_groups = _grouped_points(4, images=3, per_image=5)
    queries = keys[:4] + 0.01
    distances, indices = nearest_neighbour(queries, keys)
    assert indices.tolist() == [0, 1, 2, 3]

    no_group = torch.zeros(4, dtype=torch.long), torch.zeros(15, dtype=torch.long)
    distances, indices = nearest_neighbour(queries, keys, *no_group)
    assert torch.isinf(distances).all() and (indices == -1).all()


def test_nearest_other_point_equals_exact_search_and_never_returns_the_point_itself():
    points, _ = _grouped_points(5, images=1, per_image=300)
    points[7] = points[3]  # an exact duplicate may be found before the point itself
    own = torch.arange(len(points))
    nearest = nearest_other_point(points)
    _, expected = _matmul_nearest(points, points, own, own)

    assert (nearest != own).all()
    assert nearest[3] == 7 and nearest[7] == 3
    different = own[(own != 3) & (own != 7)]
    assert torch.equal(nearest[different], expected[different])
    assert nearest_other_point(points[:1]).tolist() == [-1]


def _features(images: int, patches: int = 20, dim: int = 16) -> MethodFeatures:
    rng = np.random.default_rng(0)
    return MethodFeatures([rng.standard_normal((patches, dim)).astype(np.float16) for _ in range(images)])


def test_take_rows_gathers_each_images_own_positions():
    features = _features(5)
    positions = [np.array([0, 3]), np.array([1, 2]), np.array([19, 4])]
    taken = features.take_rows([4, 0, 2], positions)
    for row, (image, kept) in enumerate(zip([4, 0, 2], positions)):
        assert torch.equal(taken[row], features.take([image], kept)[0])


@settings(max_examples=25, deadline=None, derandomize=True)
@given(images=st.integers(2, 12), patch_fraction=st.floats(0.05, 1.0), image_ratio=st.floats(0.1, 1.0),
       max_entries=st.none() | st.integers(1, 300), seed=st.integers(0, 2**16))
def test_bank_holds_adapted_patches_of_a_share_of_the_candidate_normals(images, patch_fraction, image_ratio,
                                                                        max_entries, seed):
    features = _features(images)
    net = LocalNet(features.dim, (32, 8))
    bank = build_memory_bank(net, features, tau_m=0.5, image_ratio=image_ratio, patch_fraction=patch_fraction,
                             rng=np.random.default_rng(seed), device=torch.device("cpu"), max_entries=max_entries)

    candidates = np.flatnonzero(bank.candidate_normals)
    assert set(bank.bank_images) <= set(candidates) and len(set(bank.bank_images)) == len(bank.bank_images)
    assert len(bank.bank_images) == min(len(candidates), max(1, round(image_ratio * len(candidates))))
    counts = np.bincount(bank.image_ids.numpy(), minlength=images)[bank.bank_images]
    assert len(set(counts)) == 1 and 1 <= counts[0] <= features.num_patches  # the same share of every bank image
    if max_entries is not None:
        assert counts[0] == 1 or counts.sum() <= max_entries
    with torch.no_grad():  # every entry is one of its own image's adapted patches, none twice
        for image in bank.bank_images:
            own = net.adapt(features.take([image])[0])
            entries = bank.features[bank.image_ids == int(image)]
            matches = torch.cdist(entries, own).argmin(dim=1)
            torch.testing.assert_close(entries, own[matches])
            assert len(set(matches.tolist())) == len(entries)
    again = build_memory_bank(net, features, tau_m=0.5, image_ratio=image_ratio, patch_fraction=patch_fraction,
                              rng=np.random.default_rng(seed), device=torch.device("cpu"), max_entries=max_entries)
    assert torch.equal(again.features, bank.features)  # the same draws for the same seed


def test_bank_cap_keeps_every_bank_image_with_fewer_patches():
    features = _features(40)
    net = LocalNet(features.dim, (32, 8))
    common = dict(tau_m=1.0, image_ratio=1.0, patch_fraction=1.0, device=torch.device("cpu"))
    capped = build_memory_bank(net, features, rng=np.random.default_rng(0), max_entries=200, **common)
    uncapped = build_memory_bank(net, features, rng=np.random.default_rng(0), max_entries=None, **common)

    assert len(uncapped.features) == len(uncapped.bank_images) * features.num_patches
    assert len(capped.features) <= 200
    counts = np.bincount(capped.image_ids.numpy(), minlength=len(features))
    assert set(counts[capped.bank_images]) == {200 // len(capped.bank_images)}
    assert np.array_equal(capped.bank_images, uncapped.bank_images)


def test_channels_last_extraction_equals_the_plain_forward_pass(tmp_path):
    from PIL import Image

    from funad.data.images import load_image
    from funad.features.backbones import create_backbone
    from funad.features.extraction import iterate_features, place_backbone, preprocess

    torch.manual_seed(0)
    backbone = create_backbone("efficientnet_lite0", pretrained=False, image_size=64).eval()
    rng = np.random.default_rng(0)
    paths = []
    for index in range(3):
        paths.append(tmp_path / f"{index}.png")
        Image.fromarray(rng.integers(0, 255, (80, 72, 3), dtype=np.uint8)).save(paths[-1])
    with torch.inference_mode():
        expected = backbone(torch.stack([preprocess(load_image(p), backbone.preprocessing)[0]
                                         for p in paths])).patches

    # Extraction uses the backbone as given; placing it (channels-last weights) is the caller's explicit step.
    batches = list(iterate_features(backbone, paths, batch_size=2, num_workers=0, device=torch.device("cpu"),
                                    progress=False, description=""))
    assert all(p.is_contiguous() for p in backbone.parameters())
    place_backbone(backbone, torch.device("cpu"))
    batches += list(iterate_features(backbone, paths, batch_size=2, num_workers=0, device=torch.device("cpu"),
                                     progress=False, description=""))
    found = torch.cat([batch.features.patches for batch in batches])
    torch.testing.assert_close(found, torch.cat([expected, expected]), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("workers", [0, 1])
def test_extraction_keeps_the_decoded_images_when_asked(tmp_path, workers):
    from PIL import Image

    from funad.data.images import load_image
    from funad.features.backbones import create_backbone
    from funad.features.extraction import iterate_features

    backbone = create_backbone("efficientnet_lite0", pretrained=False, image_size=32).eval()
    rng = np.random.default_rng(0)
    paths = [tmp_path / "0.png", tmp_path / "broken.png", tmp_path / "2.png"]
    for path, size in zip(paths[::2], [(40, 30, 3), (20, 50, 3)]):
        Image.fromarray(rng.integers(0, 255, size, dtype=np.uint8)).save(path)
    paths[1].write_bytes(b"not an image")
    cpu = torch.device("cpu")
    (kept,) = iterate_features(backbone, paths, batch_size=3, num_workers=workers, device=cpu, progress=False,
                               description="", keep_images=True)
    (plain,) = iterate_features(backbone, paths, batch_size=3, num_workers=workers, device=cpu, progress=False,
                                description="")
    assert kept.images[1] is None and kept.errors[1] and plain.images == [None, None, None]
    for row in (0, 2):
        assert np.array_equal(np.asarray(kept.images[row]), np.asarray(load_image(paths[row])))
        assert kept.images[row].size[::-1] == kept.sizes[row]
    torch.testing.assert_close(kept.features.patches, plain.features.patches)


def test_the_progress_bar_counts_every_batch_though_the_consumer_stops_after_the_last(tmp_path, capsys):
    # A consumer that takes exactly the batches it expects never resumes the generator after the last one.
    from itertools import islice

    from PIL import Image

    from funad.features.backbones import create_backbone
    from funad.features.extraction import iterate_features

    backbone = create_backbone("efficientnet_lite0", pretrained=False, image_size=32).eval()
    rng = np.random.default_rng(0)
    paths = [tmp_path / f"{index}.png" for index in range(5)]
    for path in paths:
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(path)
    batches = iterate_features(backbone, paths, batch_size=2, num_workers=0, device=torch.device("cpu"),
                               progress=True, description="predicting")
    assert sum(len(batch.indices) for batch in islice(batches, 3)) == 5
    batches.close()
    assert "5/5" in capsys.readouterr().err
