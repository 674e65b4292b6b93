"""Synthetic anomalies and a small offline demo dataset.

Two uses:

* FUN-AD* trains with synthetic anomalies made from the (unlabelled) training images
  themselves: a DRAEM-style Perlin-noise mask is filled with texture cut from another
  training image (:func:`perlin_mask`, :func:`paste_anomaly`, :func:`synthesize_anomalies`).
* :func:`make_demo_dataset` writes a contaminated, MVTec-AD-shaped dataset built from
  CC0 texture photos bundled with scikit-image, so the whole pipeline can be run and
  tested without downloading anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from funad.utils.masks import MVTEC_NORMAL_FOLDER, mvtec_mask_path

#: Largest DRAEM Perlin scale exponent: scales are 2**k lattice cells per axis, k in 0..5.
MAX_PERLIN_SCALE_EXPONENT = 5
#: Perlin draws before :func:`perlin_mask` gives up and falls back to an ellipse.
PERLIN_MASK_ATTEMPTS = 50
#: Area bounds of a demo defect, as a fraction of the image: visible, but not the whole image.
DEFECT_AREA_BOUNDS = (0.005, 0.10)


# --------------------------------------------------------------------------- Perlin noise


def _fade(t: np.ndarray) -> np.ndarray:
    """Perlin's quintic fade curve: C2-continuous, so the noise has no visible lattice seams."""
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


def perlin_noise(shape: tuple[int, int], scale: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """2-D gradient (Perlin) noise of ``shape`` with ``scale`` lattice cells per axis, in [-1, 1].

    Each lattice corner gets a random unit gradient; a pixel's value is the fade-weighted
    interpolation of the dot products between the corner gradients and the pixel's offsets
    from those corners.  The result is scaled by sqrt(2) so that it spans [-1, 1] (plain 2-D
    Perlin noise peaks at sqrt(2)/2).  When ``shape`` is not a multiple of ``scale`` the noise
    is generated on the next multiple and cropped, so every cell keeps the same size.
    """
    height, width = (int(s) for s in shape)
    cells_y, cells_x = (int(s) for s in scale)
    if height < 1 or width < 1:
        raise ValueError(f"shape must be positive, got {shape}")
    if cells_y < 1 or cells_x < 1:
        raise ValueError(f"scale must be at least 1 cell per axis, got {scale}")

    cell_h, cell_w = -(-height // cells_y), -(-width // cells_x)
    angles = rng.uniform(0.0, 2.0 * np.pi, size=(cells_y + 1, cells_x + 1))
    gradients = np.stack([np.cos(angles), np.sin(angles)], axis=-1)

    # Lattice coordinates of every pixel of the padded grid, split into cell index and offset.
    ys = np.arange(cells_y * cell_h) / cell_h
    xs = np.arange(cells_x * cell_w) / cell_w
    iy, fy = np.divmod(ys, 1.0)
    ix, fx = np.divmod(xs, 1.0)
    iy, ix = iy.astype(int)[:, None], ix.astype(int)[None, :]
    fy, fx = fy[:, None], fx[None, :]

    def corner(dy: int, dx: int) -> np.ndarray:
        g = gradients[iy + dy, ix + dx]
        return g[..., 0] * (fy - dy) + g[..., 1] * (fx - dx)

    wy, wx = _fade(fy), _fade(fx)
    top = corner(0, 0) + wx * (corner(0, 1) - corner(0, 0))
    bottom = corner(1, 0) + wx * (corner(1, 1) - corner(1, 0))
    noise = np.sqrt(2.0) * (top + wy * (bottom - top))
    return np.clip(noise[:height, :width], -1.0, 1.0)


def _area_fraction(mask: np.ndarray) -> float:
    return float(np.count_nonzero(mask)) / mask.size


def _ellipse_mask(shape: tuple[int, int], rng: np.random.Generator, area_fraction: float) -> np.ndarray:
    """A random axis-aligned ellipse of about ``area_fraction`` of the image, fully inside it."""
    height, width = shape
    area = area_fraction * height * width
    aspect = rng.uniform(0.5, 2.0)
    # Fit one radius, then the other; refit the first if the second hit the image border.
    ry = max(min(np.sqrt(area * aspect / np.pi), (height - 1) / 2), 0.5)
    rx = max(min(area / (np.pi * ry), (width - 1) / 2), 0.5)
    ry = max(min(area / (np.pi * rx), (height - 1) / 2), 0.5)
    cy = rng.uniform(ry, height - 1 - ry)
    cx = rng.uniform(rx, width - 1 - rx)
    yy, xx = np.ogrid[:height, :width]
    mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    mask[int(round(cy)), int(round(cx))] = True  # never empty, even on tiny images
    return mask


def perlin_mask(
    shape: tuple[int, int],
    rng: np.random.Generator,
    threshold: float = 0.5,
    min_area_fraction: float = 0.005,
    max_area_fraction: float = 0.25,
    *,
    max_scale_exponent: int = MAX_PERLIN_SCALE_EXPONENT,
) -> np.ndarray:
    """DRAEM-style anomaly mask: thresholded Perlin noise of random scale 2**k per axis
    (k in 0..``max_scale_exponent``, DRAEM's 0..5 by default).

    Irregular blobs of random size and elongation look like real defects far more than
    rectangles do, which is why DRAEM (and FUN-AD*) use them.  A draw whose area fraction
    falls outside ``[min_area_fraction, max_area_fraction]`` is redrawn, at most
    :data:`PERLIN_MASK_ATTEMPTS` times; after that an ellipse within the bounds is returned so
    that the caller always gets a usable mask.  The noise is rotated by a random
    angle in [-90, 90] degrees before thresholding, so blobs are not aligned with the axes.
    A lower ``max_scale_exponent`` keeps only the coarser scales: fewer, larger blobs instead of
    speckle spread over the whole image.
    """
    if not 0.0 < min_area_fraction < max_area_fraction <= 1.0:
        raise ValueError(
            f"need 0 < min_area_fraction < max_area_fraction <= 1, got {min_area_fraction}, {max_area_fraction}"
        )
    if max_scale_exponent < 0:
        raise ValueError(f"max_scale_exponent must be non-negative, got {max_scale_exponent}")
    shape = (int(shape[0]), int(shape[1]))
    for _ in range(PERLIN_MASK_ATTEMPTS):
        scale = tuple(2 ** rng.integers(0, max_scale_exponent + 1, size=2))
        noise = perlin_noise(shape, scale, rng)
        noise = ndimage.rotate(noise, rng.uniform(-90.0, 90.0), reshape=False, order=1, mode="reflect")
        mask = noise > threshold
        if min_area_fraction <= _area_fraction(mask) <= max_area_fraction:
            return mask
    span = max_area_fraction - min_area_fraction
    target = rng.uniform(min_area_fraction + 0.2 * span, max_area_fraction - 0.2 * span)
    return _ellipse_mask(shape, rng, target)


# --------------------------------------------------------------------------- texture pasting


def _check_rgb(name: str, array: np.ndarray) -> None:
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"{name} must be an (H, W, 3) uint8 array, got {array.shape} {array.dtype}")


def _random_crop_resized(source: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A random crop of ``source`` with the target's aspect ratio (30-100 % of the largest such crop),
    resized to ``size`` = (height, width); varying the crop varies the apparent texture scale."""
    height, width = size
    src_h, src_w = source.shape[:2]
    fit = min(src_h / height, src_w / width)
    fraction = rng.uniform(0.3, 1.0)
    crop_h = max(1, min(src_h, int(round(height * fit * fraction))))
    crop_w = max(1, min(src_w, int(round(width * fit * fraction))))
    top = rng.integers(0, src_h - crop_h + 1)
    left = rng.integers(0, src_w - crop_w + 1)
    crop = Image.fromarray(source[top : top + crop_h, left : left + crop_w])
    return np.asarray(crop.resize((width, height), Image.Resampling.BILINEAR), dtype=np.uint8)


def paste_anomaly(
    image: np.ndarray,
    source: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    opacity_range: tuple[float, float] = (0.5, 1.0),
) -> np.ndarray:
    """``image`` with the ``mask`` region replaced by texture from ``source``, DRAEM-style.

    A random crop of ``source`` is resized to the image size and blended into the masked
    pixels with a random opacity from ``opacity_range`` (opacity < 1 keeps part of the
    original surface, giving subtler anomalies).  Pixels outside the mask are returned
    unchanged, bit for bit, so the mask is an exact ground truth.
    """
    _check_rgb("image", image)
    _check_rgb("source", source)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image shape {image.shape[:2]}")
    low, high = opacity_range
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"opacity_range must satisfy 0 <= low <= high <= 1, got {opacity_range}")

    texture = _random_crop_resized(source, image.shape[:2], rng).astype(np.float32)
    opacity = rng.uniform(low, high)
    blended = (1.0 - opacity) * image.astype(np.float32) + opacity * texture
    blended = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return np.where(mask[..., None], blended, image)


def synthesize_anomalies(
    images: Sequence[np.ndarray], count: int, rng: np.random.Generator
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` synthetic anomalies ``(image, mask)`` made from the training images themselves (FUN-AD*).

    Each one takes a random image and pastes, inside a Perlin mask, texture from a
    *different* random image of the list: no external texture set is needed, and the pasted
    texture is realistic for the domain yet out of place where it lands.
    """
    if len(images) < 2:
        raise ValueError(
            f"synthesize_anomalies needs at least 2 images (one to paste into, one as texture), got {len(images)}"
        )
    if count < 0:
        raise ValueError(f"count must be non-negative, got {count}")
    anomalies = []
    for _ in range(count):
        target = int(rng.integers(len(images)))
        donor = int(rng.integers(len(images) - 1))
        donor += donor >= target  # any index but the target's
        image = images[target]
        mask = perlin_mask(image.shape[:2], rng)
        anomalies.append((paste_anomaly(image, images[donor], mask, rng), mask))
    return anomalies


# --------------------------------------------------------------------------- demo dataset


@dataclass
class DemoDataset:
    """Where :func:`make_demo_dataset` wrote everything, plus the labels it knows."""

    root: Path
    train_dir: Path
    test_dir: Path
    test_paths: list[Path]
    test_labels: list[int]  # 1 = anomalous, aligned with test_paths
    test_masks: dict[Path, Path]  # anomalous test image -> its ground-truth mask png
    train_anomalous: list[Path]  # the contaminating training images (unlabelled on disk)


@dataclass(frozen=True)
class DemoTextures:
    """The bundled scikit-image photos as RGB: brick is the product, the others are defect material."""

    surface: np.ndarray
    defects: tuple[np.ndarray, ...]


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(np.asarray(gray, dtype=np.uint8)[..., None], 3, axis=2)


def load_demo_textures() -> DemoTextures:
    """Brick, grass and gravel from scikit-image: CC0 photos installed with the package, no download."""
    from skimage import data

    return DemoTextures(
        surface=_gray_to_rgb(data.brick()),
        defects=(_gray_to_rgb(data.grass()), _gray_to_rgb(data.gravel())),
    )


def normal_sample(surface: np.ndarray, image_size: int, rng: np.random.Generator) -> np.ndarray:
    """A defect-free product image: a half-size crop of the surface at a random position,
    randomly flipped and with brightness/contrast jitter, so normal images vary like real captures."""
    src_h, src_w = surface.shape[:2]
    side = min(src_h, src_w) // 2
    top = rng.integers(0, src_h - side + 1)
    left = rng.integers(0, src_w - side + 1)
    crop = surface[top : top + side, left : left + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    if rng.random() < 0.5:
        crop = crop[::-1, :]
    resized = np.asarray(
        Image.fromarray(np.ascontiguousarray(crop)).resize((image_size, image_size), Image.Resampling.BILINEAR),
        dtype=np.float32,
    )
    jittered = resized * rng.uniform(0.9, 1.1) + rng.uniform(-10.0, 10.0)
    return np.clip(np.rint(jittered), 0, 255).astype(np.uint8)


def texture_defect(
    image: np.ndarray, textures: Sequence[np.ndarray], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Foreign material (grass or gravel) inside Perlin blobs: a contamination-type defect.

    Only coarse Perlin scales (up to 2**3 cells per axis) are used so the defect is a few
    compact blobs rather than speckle over the whole image.
    """
    low, high = DEFECT_AREA_BOUNDS
    mask = perlin_mask(image.shape[:2], rng, min_area_fraction=low, max_area_fraction=high, max_scale_exponent=3)
    source = textures[int(rng.integers(len(textures)))]
    return paste_anomaly(image, source, mask, rng, opacity_range=(0.7, 1.0)), mask


def _segment_mask(shape: tuple[int, int], start: np.ndarray, end: np.ndarray, width: float) -> np.ndarray:
    """Pixels within ``width / 2`` of the segment ``start``-``end`` (points as (y, x))."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    points = np.stack([yy, xx], axis=-1).astype(np.float64)
    direction = end - start
    t = np.clip(((points - start) @ direction) / (direction @ direction), 0.0, 1.0)
    distance = np.linalg.norm(points - (start + t[..., None] * direction), axis=-1)
    return distance <= width / 2


def scratch_defect(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A thin straight scratch, a few pixels wide and 35-70 % of the image long, darker or lighter
    than the surface: a defect that is thin, so small in area, but long and high-contrast."""
    height, width = image.shape[:2]
    size = min(height, width)
    line_width = max(2.0, size * rng.uniform(0.015, 0.03))
    length = size * rng.uniform(0.35, 0.7)
    angle = rng.uniform(0.0, np.pi)
    half = 0.5 * length * np.array([np.sin(angle), np.cos(angle)])
    margin = np.abs(half) + line_width
    centre = rng.uniform(margin, np.array([height, width]) - 1 - margin)
    mask = _segment_mask((height, width), centre - half, centre + half, line_width)
    target = 0.0 if rng.random() < 0.5 else 255.0
    strength = rng.uniform(0.6, 0.85)
    scratched = image.astype(np.float32) * (1.0 - strength) + target * strength
    return np.where(mask[..., None], np.rint(scratched).astype(np.uint8), image), mask


def _polygon_mask(shape: tuple[int, int], vertices: np.ndarray) -> np.ndarray:
    """Pixels inside the polygon ``vertices`` ((y, x) rows), by scikit-image's scan-line fill."""
    from skimage.draw import polygon

    mask = np.zeros(shape, dtype=bool)
    rows, cols = polygon(vertices[:, 0], vertices[:, 1], shape=shape)
    mask[rows, cols] = True
    return mask


def missing_chunk_defect(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A broken-off piece: an irregular polygon (1-5 % of the image) filled with one flat colour,
    45-75 % of the surface's brightness there, as where material has chipped away and left a
    shadowed hole.  Moderately darker rather than black, so it is the missing texture that gives
    it away more than sheer contrast."""
    height, width = image.shape[:2]
    n_vertices = int(rng.integers(5, 10))
    # Evenly spread angles with jitter: irregular, but never collapsing into a sliver.
    step = 2.0 * np.pi / n_vertices
    angles = step * (np.arange(n_vertices) + rng.uniform(-0.3, 0.3, n_vertices)) + rng.uniform(0.0, step)
    jitter = rng.uniform(0.6, 1.0, n_vertices)
    # Radius giving the target area once the jittered vertices shrink the circle (roughly by jitter**2).
    target_area = rng.uniform(0.01, 0.05) * height * width
    radius = np.sqrt(target_area / (np.pi * np.mean(jitter**2)))
    centre = rng.uniform(radius, np.array([height, width]) - 1 - radius)
    offsets = (radius * jitter)[:, None] * np.stack([np.sin(angles), np.cos(angles)], axis=1)
    mask = _polygon_mask((height, width), centre + offsets)
    colour = np.rint(image[mask].mean(axis=0) * rng.uniform(0.45, 0.75)).astype(np.uint8)
    return np.where(mask[..., None], colour, image), mask


def add_defect(
    image: np.ndarray, textures: Sequence[np.ndarray], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``image`` with one random defect (foreign texture, scratch or missing chunk) and its mask."""
    kind = int(rng.integers(3))
    if kind == 0:
        return texture_defect(image, textures, rng)
    if kind == 1:
        return scratch_defect(image, rng)
    return missing_chunk_defect(image, rng)


def _save_rgb(array: np.ndarray, path: Path) -> Path:
    Image.fromarray(array).save(path)
    return path


def _save_mask(mask: np.ndarray, path: Path) -> Path:
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(path)
    return path


def make_demo_dataset(
    root: Path,
    *,
    seed: int = 0,
    image_size: int = 128,
    n_train_normal: int = 60,
    n_train_anomalous: int = 6,
    n_test_normal: int = 20,
    n_test_anomalous: int = 20,
) -> DemoDataset:
    """Write a small contaminated anomaly-detection dataset in the MVTec AD layout under ``root``.

    ``root/train/img_NNN.png`` mixes normal and anomalous images in shuffled order with no
    labels in the names (the fully unsupervised setting: the training folder is contaminated);
    ``root/test/good``, ``root/test/defect`` and ``root/ground_truth/defect/NNN_mask.png``
    follow MVTec AD so the same loaders read both.  The same ``seed`` gives the same files.
    ``root`` must be missing or empty: leftovers from an earlier, larger run would otherwise
    silently join the new dataset.
    """
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty; make_demo_dataset writes into a new or empty folder")
    counts = (n_train_normal, n_train_anomalous, n_test_normal, n_test_anomalous)
    if min(counts) < 0:
        raise ValueError(f"image counts must be non-negative, got {counts}")
    if image_size < 16:
        raise ValueError(f"image_size must be at least 16 pixels to leave room for a defect, got {image_size}")

    rng = np.random.default_rng(seed)
    textures = load_demo_textures()
    train_dir, test_dir = root / "train", root / "test"
    good_dir, defect_dir, ground_truth = test_dir / MVTEC_NORMAL_FOLDER, test_dir / "defect", root / "ground_truth"
    mask_dir = ground_truth / defect_dir.name
    for folder in (train_dir, good_dir, defect_dir, mask_dir):
        folder.mkdir(parents=True, exist_ok=True)

    def normal() -> np.ndarray:
        return normal_sample(textures.surface, image_size, rng)

    def defective() -> tuple[np.ndarray, np.ndarray]:
        return add_defect(normal(), textures.defects, rng)

    train_is_anomalous = rng.permutation([False] * n_train_normal + [True] * n_train_anomalous)
    train_anomalous = []
    for index, anomalous in enumerate(train_is_anomalous):
        path = train_dir / f"img_{index:03d}.png"
        _save_rgb(defective()[0] if anomalous else normal(), path)
        if anomalous:
            train_anomalous.append(path)

    test_paths = [_save_rgb(normal(), good_dir / f"{i:03d}.png") for i in range(n_test_normal)]
    test_masks = {}
    for i in range(n_test_anomalous):
        image, mask = defective()
        path = _save_rgb(image, defect_dir / f"{i:03d}.png")
        test_masks[path] = _save_mask(mask, mvtec_mask_path(ground_truth, defect_dir.name, path))
        test_paths.append(path)

    return DemoDataset(
        root=root,
        train_dir=train_dir,
        test_dir=test_dir,
        test_paths=test_paths,
        test_labels=[0] * n_test_normal + [1] * n_test_anomalous,
        test_masks=test_masks,
        train_anomalous=train_anomalous,
    )
