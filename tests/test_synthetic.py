"""Synthetic anomalies (Perlin masks, texture pasting) and the offline demo dataset."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from funad.data.synthetic import (
    DEFECT_AREA_BOUNDS,
    add_defect,
    load_demo_textures,
    make_demo_dataset,
    missing_chunk_defect,
    normal_sample,
    paste_anomaly,
    perlin_mask,
    perlin_noise,
    scratch_defect,
    synthesize_anomalies,
    texture_defect,
)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _random_rgb(shape: tuple[int, int], seed: int) -> np.ndarray:
    return _rng(seed).integers(0, 256, size=(*shape, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def textures():
    return load_demo_textures()


# --------------------------------------------------------------------------- Perlin noise and masks


@pytest.mark.parametrize(
    "shape, scale", [((64, 64), (4, 4)), ((50, 70), (3, 8)), ((33, 17), (1, 32)), ((1, 1), (1, 1))]
)
def test_perlin_noise_shape_and_range(shape, scale):
    noise = perlin_noise(shape, scale, _rng())
    assert noise.shape == shape
    assert np.all(np.isfinite(noise))
    assert noise.min() >= -1.0 and noise.max() <= 1.0


def test_perlin_noise_is_smooth_and_varied():
    noise = perlin_noise((128, 128), (4, 4), _rng())
    assert noise.std() > 0.1
    # Neighbouring pixels are close: gradient noise, not white noise.
    assert np.abs(np.diff(noise, axis=1)).max() < 0.15


def test_perlin_noise_is_deterministic():
    a = perlin_noise((40, 60), (4, 2), _rng(7))
    b = perlin_noise((40, 60), (4, 2), _rng(7))
    c = perlin_noise((40, 60), (4, 2), _rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("bad", [(0, 4), (4, -1)])
def test_perlin_noise_rejects_bad_scale(bad):
    with pytest.raises(ValueError):
        perlin_noise((32, 32), bad, _rng())


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("shape", [(128, 128), (96, 160)])
def test_perlin_mask_area_within_bounds(seed, shape):
    mask = perlin_mask(shape, _rng(seed), min_area_fraction=0.01, max_area_fraction=0.2)
    assert mask.dtype == bool and mask.shape == shape
    assert 0.01 <= mask.mean() <= 0.2


@pytest.mark.parametrize("seed", range(5))
def test_perlin_mask_falls_back_to_ellipse_within_bounds(seed):
    # A threshold above the noise's range never yields a mask, forcing the fallback.
    mask = perlin_mask((64, 80), _rng(seed), threshold=2.0)
    assert 0.005 <= mask.mean() <= 0.25


def test_perlin_mask_rejects_bad_bounds():
    with pytest.raises(ValueError):
        perlin_mask((32, 32), _rng(), min_area_fraction=0.3, max_area_fraction=0.2)


# --------------------------------------------------------------------------- pasting


def test_paste_anomaly_changes_only_masked_pixels():
    image = _random_rgb((64, 64), 1)
    source = _random_rgb((100, 120), 2)
    mask = perlin_mask((64, 64), _rng(3))
    out = paste_anomaly(image, source, mask, _rng(4))
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[~mask], image[~mask])
    assert np.mean(np.any(out[mask] != image[mask], axis=-1)) > 0.5


def test_paste_anomaly_full_opacity_copies_source_texture():
    image = np.zeros((32, 32, 3), np.uint8)
    source = np.full((50, 50, 3), 200, np.uint8)
    mask = np.zeros((32, 32), bool)
    mask[8:16, 8:16] = True
    out = paste_anomaly(image, source, mask, _rng(), opacity_range=(1.0, 1.0))
    assert np.all(out[mask] == 200)
    assert np.all(out[~mask] == 0)


def test_paste_anomaly_rejects_mismatched_mask():
    with pytest.raises(ValueError, match="mask shape"):
        paste_anomaly(_random_rgb((32, 32), 0), _random_rgb((32, 32), 1), np.ones((16, 16), bool), _rng())


def test_synthesize_anomalies_count_and_masks():
    images = [_random_rgb((48, 48), seed) for seed in range(3)]
    anomalies = synthesize_anomalies(images, 5, _rng())
    assert len(anomalies) == 5
    for image, mask in anomalies:
        assert image.shape == (48, 48, 3) and mask.shape == (48, 48)
        assert mask.any()
        # Outside the mask the image is one of the inputs, untouched.
        assert any(np.array_equal(image[~mask], original[~mask]) for original in images)


def test_synthesize_anomalies_takes_texture_from_another_image():
    # Two flat images: the pasted texture can only be the other image's colour.
    images = [np.full((32, 32, 3), 0, np.uint8), np.full((32, 32, 3), 250, np.uint8)]
    for image, mask in synthesize_anomalies(images, 6, _rng(1)):
        outside = int(image[~mask][0, 0])
        inside = image[mask].astype(int)
        assert np.all(np.abs(inside - outside) >= 0.5 * 250 - 1)


@pytest.mark.parametrize("n_images", [0, 1])
def test_synthesize_anomalies_needs_two_images(n_images):
    with pytest.raises(ValueError, match="at least 2 images"):
        synthesize_anomalies([_random_rgb((16, 16), 0)] * n_images, 3, _rng())


# --------------------------------------------------------------------------- demo defects


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("kind", ["texture", "scratch", "chunk", "any"])
def test_defects_are_aligned_with_their_masks(textures, kind, seed):
    rng = _rng(seed)
    clean = normal_sample(textures.surface, 96, rng)
    make = {
        "texture": lambda: texture_defect(clean, textures.defects, rng),
        "scratch": lambda: scratch_defect(clean, rng),
        "chunk": lambda: missing_chunk_defect(clean, rng),
        "any": lambda: add_defect(clean, textures.defects, rng),
    }[kind]
    defective, mask = make()
    low, high = DEFECT_AREA_BOUNDS
    assert low <= mask.mean() <= high
    np.testing.assert_array_equal(defective[~mask], clean[~mask])
    # The defect is visible: masked pixels differ clearly on average.
    difference = np.abs(defective.astype(int) - clean.astype(int)).max(axis=-1)
    assert difference[mask].mean() > 15


def test_normal_samples_vary_but_stay_alike(textures):
    rng = _rng()
    samples = [normal_sample(textures.surface, 64, rng) for _ in range(4)]
    assert all(s.shape == (64, 64, 3) and s.dtype == np.uint8 for s in samples)
    assert not np.array_equal(samples[0], samples[1])
    means = [s.mean() for s in samples]
    assert max(means) - min(means) < 40


# --------------------------------------------------------------------------- demo dataset


def _read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


@pytest.fixture(scope="module")
def small_counts():
    return dict(image_size=64, n_train_normal=10, n_train_anomalous=3, n_test_normal=4, n_test_anomalous=5)


@pytest.fixture(scope="module")
def demo(tmp_path_factory, small_counts):
    return make_demo_dataset(tmp_path_factory.mktemp("demo") / "data", seed=3, **small_counts)


def test_demo_dataset_layout_and_counts(demo):
    root = demo.root
    assert demo.train_dir == root / "train" and demo.test_dir == root / "test"
    train = sorted(demo.train_dir.glob("*.png"))
    assert len(train) == 13
    assert len(list((root / "test" / "good").glob("*.png"))) == 4
    defects = sorted((root / "test" / "defect").glob("*.png"))
    assert len(defects) == 5
    assert len(list((root / "ground_truth" / "defect").glob("*_mask.png"))) == 5
    assert len(demo.test_paths) == len(demo.test_labels) == 9
    assert sum(demo.test_labels) == 5
    assert set(demo.test_masks) == {p for p, label in zip(demo.test_paths, demo.test_labels) if label}
    for path, mask_path in demo.test_masks.items():
        assert mask_path == root / "ground_truth" / "defect" / f"{path.stem}_mask.png"
    assert len(demo.train_anomalous) == 3 and set(demo.train_anomalous) <= set(train)


def test_demo_train_names_carry_no_labels(demo):
    names = [p.name for p in demo.train_dir.iterdir()]
    assert all(re.fullmatch(r"img_\d{3}\.png", name) for name in names)


def test_demo_images_are_rgb_and_masks_binary_and_sized(demo):
    for path in demo.test_paths:
        image = _read(path)
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    low, high = DEFECT_AREA_BOUNDS
    for mask_path in demo.test_masks.values():
        mask = _read(mask_path)
        assert mask.shape == (64, 64)
        assert set(np.unique(mask)) == {0, 255}
        assert low <= (mask > 0).mean() <= high


def test_demo_anomalies_stand_out_inside_their_masks(demo):
    # Without the clean originals, compare each defect region with the surrounding surface:
    # inside the mask the image departs from what normal images look like there.
    good = np.stack([_read(p).astype(float) for p, label in zip(demo.test_paths, demo.test_labels) if not label])
    normal_mean, normal_std = good.mean(axis=0), good.std(axis=0) + 1.0
    for path, mask_path in demo.test_masks.items():
        z = np.abs(_read(path).astype(float) - normal_mean) / normal_std
        mask = _read(mask_path) > 0
        assert z[mask].mean() > z[~mask].mean()


def test_demo_dataset_is_deterministic(tmp_path, small_counts, demo):
    again = make_demo_dataset(tmp_path / "again", seed=3, **small_counts)
    files, again_files = sorted(demo.root.rglob("*.png")), sorted(again.root.rglob("*.png"))
    assert len(files) == len(again_files) == 13 + 9 + 5
    for a, b in zip(files, again_files):
        assert a.relative_to(demo.root) == b.relative_to(again.root)
        np.testing.assert_array_equal(_read(a), _read(b))
    assert [p.name for p in again.train_anomalous] == [p.name for p in demo.train_anomalous]

    other = make_demo_dataset(tmp_path / "other", seed=4, **small_counts)
    assert not np.array_equal(_read(other.test_paths[0]), _read(demo.test_paths[0]))


def test_demo_dataset_refuses_non_empty_folder(tmp_path):
    (tmp_path / "stale.png").write_bytes(b"")
    with pytest.raises(FileExistsError):
        make_demo_dataset(tmp_path, n_train_normal=1, n_train_anomalous=0, n_test_normal=0, n_test_anomalous=0)


def test_default_demo_dataset_is_quick(tmp_path):
    import time

    start = time.perf_counter()
    demo = make_demo_dataset(tmp_path / "default")
    assert time.perf_counter() - start < 5.0
    assert len(list(demo.train_dir.glob("*.png"))) == 66
    assert len(demo.test_paths) == 40
