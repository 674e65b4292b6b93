"""Finding and reading images: every input is checked before any feature is extracted.

Factory image folders are messy: thumbnails caches, half-copied files, 16-bit camera exports,
palette PNGs and phone photos with EXIF rotation sit next to each other. Every reader here
either returns an 8-bit RGB image or raises :class:`ImageLoadError` naming the file and the
problem, so one bad file can be skipped and reported instead of crashing a training run.

Conversion rules (the same for every file, so equal pixels in two files give equal RGB):

* Transparency (RGBA, LA, palette or colour-key transparency, premultiplied alpha) is
  composited onto black: transparent pixels carry no trustworthy colour, and black keeps
  them identical across files whatever colour the exporting tool left under them.
  Opaque pixels are unchanged, so for an opaque RGBA file this equals dropping alpha.
* 16-bit images (modes I;16, I;16B, ...) are scaled by their bit depth, 0..65535 to
  0..255; 32-bit integer TIFFs by the range their sample format declares (signed or not).
  A fixed scale, unlike a per-image min/max stretch, keeps an image that is too bright or
  too dark as a whole looking different from the others.
* 32-bit float images (mode F) are taken to be in 0..1, the usual float convention;
  values outside are clipped and NaN becomes 0.
* CMYK, YCbCr, LAB, 1-bit, greyscale and palette images use Pillow's conversion;
  embedded ICC colour profiles are not applied.
* The EXIF (or XMP) orientation is applied, so width and height swap for a rotated photo.

In-memory images (a camera loop need not write files) follow the same rules: a numpy array
``HxW``, ``HxWx3`` or ``HxWx4`` of uint8, uint16 (scaled as a 16-bit file) or float (0..1, as a
float file), or a PIL image, becomes the RGB image a file with those pixels would give.
"""

from __future__ import annotations

import csv
import errno
import io
import logging
import os
import threading
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import ExifTags, Image, ImageFile, ImageOps, TiffImagePlugin

from funad.utils.arguments import UsageError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}

# Pillow formats behind IMAGE_EXTENSIONS (its JPEG reader also takes the multi-picture JPEGs
# many cameras write). Any other format Pillow knows is refused even for a file named
# explicitly, so a stray file cannot reach an exotic decoder (EPS, for one, runs Ghostscript).
READ_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP")

# Largest width x height read, checked from the header before any pixel is decoded.
# 100 megapixels covers line-scan and high-resolution inspection cameras; decoding it takes
# 300 MB as 8-bit RGB and more on the 16-bit, float and alpha paths, so a bigger header is
# far more likely a corrupt file or a decompression bomb than a real picture.
# Pillow's own hard limit (2 * PIL.Image.MAX_IMAGE_PIXELS, about 179 megapixels) still
# applies on top; raise that too before passing a larger ``max_pixels``.
MAX_IMAGE_PIXELS = 100_000_000

# EXIF orientations that rotate or transpose the picture, swapping width and height.
_SWAPPING_ORIENTATIONS = {5, 6, 7, 8}

_SIGNED_SAMPLES = 2  # TIFF SampleFormat value for two's-complement integers


class ImageLoadError(ValueError):
    """An input file that cannot be used as an image; the message names the file and the problem."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


@dataclass
class SkippedImage:
    """A file left out by :func:`check_images`, with the reason to show the user."""

    path: Path
    reason: str


#: What predict takes per image besides a path: a decoded 8-bit RGB image.
ImageSource = Path | Image.Image
ImageInput = str | os.PathLike | np.ndarray | Image.Image


def gather_images(inputs: ImageInput | Iterable[ImageInput]) -> list[ImageSource]:
    """Paths (folders expanded by :func:`discover_images`) and in-memory images converted to RGB, in order.

    Each item gives its own images, a file named twice twice: a caller lining its inputs up with the
    scores gets one per file or array it passed (a folder's files in :func:`discover_images`' order).
    """
    if isinstance(inputs, (str, os.PathLike, np.ndarray, Image.Image)) or not isinstance(inputs, Iterable):
        inputs = [inputs]  # one image; anything else not iterable is refused by discover_images, by its type
    sources: list[ImageSource] = []
    for position, item in enumerate(inputs):
        if isinstance(item, np.ndarray):
            sources.append(image_from_array(item, f"input {position}"))
        elif isinstance(item, Image.Image):
            sources.append(_to_rgb(ImageOps.exif_transpose(item)))
        else:
            sources.extend(discover_images(item))
    return sources


def image_from_array(array: np.ndarray, name: str = "array") -> Image.Image:
    """The 8-bit RGB image an image file holding ``array``'s pixels would give (module docstring).

    ``name`` says which input a refused array was, in the ValueError.
    """
    channels = array.shape[2] if array.ndim == 3 else 1
    if array.ndim not in (2, 3) or channels not in (1, 3, 4) or min(array.shape[:2], default=0) == 0:
        raise ValueError(f"{name}: an array of shape {array.shape} is not an image (expected HxW, HxWx3 or HxWx4)")
    if array.dtype == np.uint8:
        pixels = array
    elif array.dtype == np.uint16:
        pixels = _scaled_to_8bit(array, 0, 65535)
    elif np.issubdtype(array.dtype, np.floating):
        if np.nanmax(array, initial=0.0) > 1.0 + 1e-6:  # most likely 0..255 values in a float array
            logger.warning("%s: float pixels up to %g, where floats are read as 0..1 (above 1: white); divide by "
                           "255 first if they are 0..255", name, float(np.nanmax(array)))
        pixels = _scaled_to_8bit(array, 0.0, 1.0)
    else:
        raise ValueError(f"{name}: pixels of type {array.dtype} are not supported (uint8, uint16 or float)")
    if pixels.ndim == 3 and channels == 1:
        pixels = pixels[..., 0]
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[channels]
    return _to_rgb(Image.fromarray(np.ascontiguousarray(pixels), mode))


def discover_images(inputs: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Image files among ``inputs``: files and folders, folders searched recursively.

    Folders contribute only files with an :data:`IMAGE_EXTENSIONS` suffix (any case), in
    sorted order; files named explicitly are always kept, since the user meant them and
    :func:`check_images` will judge them. Each file appears once, however often it is
    reachable. Folders without images give nothing; a missing path is an error because it
    is almost always a typo.
    """
    if isinstance(inputs, (str, os.PathLike)) or not isinstance(inputs, Iterable):
        inputs = [inputs]  # one path; anything else not iterable is refused below, by its type
    found: list[Path] = []
    seen: set[Path] = set()
    for item in inputs:
        if not isinstance(item, (str, os.PathLike)):
            raise TypeError(f"{type(item).__name__} is not the path of an image file or folder")
        path = Path(item)
        if path.is_dir():
            candidates = _images_under(path)
        elif path.exists():
            candidates = [path]
        else:
            raise FileNotFoundError(errno.ENOENT, "no such file or folder", str(path))  # as the OS's own names it
        for candidate in candidates:
            key = candidate.resolve()
            if key not in seen:
                seen.add(key)
                found.append(candidate)
    return found


class NoImageFilesError(UsageError):
    """The inputs hold no image file."""


def require_image_files(inputs: list[str]) -> list[Path]:
    """The image files among a command line's ``inputs`` (:func:`discover_images`), or a
    :class:`NoImageFilesError` naming the inputs and the suffixes looked for."""
    paths = discover_images(inputs)
    if not paths:
        raise NoImageFilesError(f"no image files in {', '.join(inputs)} (folders are searched recursively "
                                f"for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    return paths


def _images_under(folder: Path) -> list[Path]:
    """Image files below ``folder`` in sorted order, hidden files and folders skipped.

    Hidden entries (.git, .thumbnails, macOS "._x.png" resource forks) are tool litter, not
    data. Linked folders are followed, each real folder once, so a link back up the tree
    cannot loop.
    """
    visited = {folder.resolve()}
    found: list[Path] = []
    for root, folders, files in os.walk(folder, followlinks=True, onerror=_warn_unlistable):
        folders[:] = [
            name for name in sorted(folders) if not name.startswith(".") and _first_visit(Path(root, name), visited)
        ]
        found.extend(
            Path(root, name)
            for name in files
            if not name.startswith(".")
            and Path(name).suffix.lower() in IMAGE_EXTENSIONS
            and os.path.isfile(os.path.join(root, name))
        )
    return sorted(found)


def _first_visit(folder: Path, visited: set[Path]) -> bool:
    real = folder.resolve()
    if real in visited:
        return False
    visited.add(real)
    return True


def _warn_unlistable(error: OSError) -> None:
    """An unreadable subfolder should not stop discovery, but must not vanish silently."""
    logger.warning("cannot list folder %s: %s", error.filename, error.strerror or error)


def load_image(path: str | Path, *, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Read ``path`` fully as an 8-bit RGB image, EXIF orientation applied.

    Raises :class:`ImageLoadError` for anything that is not a complete, supported image no
    larger than ``max_pixels``; see the module docstring for how modes are converted.
    """
    return _read_rgb(Path(path), max_pixels, reduced=False)


def image_size(path: str | Path, *, max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[int, int]:
    """(height, width) of what :func:`load_image` returns, mostly without decoding pixels.

    Only a PNG whose EXIF is not before its pixel data gets decoded, because Pillow has to
    read to the end of the file to find out whether it is rotated.
    """
    path = Path(path)
    with _opened(path, max_pixels) as image:
        with _pil_errors(path, max_pixels, "damaged image data or EXIF"):
            orientation = image.getexif().get(ExifTags.Base.Orientation)
        width, height = image.size
    return (width, height) if orientation in _SWAPPING_ORIENTATIONS else (height, width)


def to_array(image: Image.Image) -> np.ndarray:
    """(height, width, 3) uint8 array of an image from :func:`load_image`."""
    if image.mode != "RGB":
        raise ValueError(f"expected an RGB image from load_image, got mode {image.mode}")
    return np.asarray(image, dtype=np.uint8)


def check_images(
    paths: Iterable[str | Path], *, strict: bool = False, max_pixels: int = MAX_IMAGE_PIXELS
) -> tuple[list[Path], list[SkippedImage]]:
    """Split ``paths`` into files :func:`load_image` will read and files it will refuse.

    Each file is decoded to the end, because only that catches a truncated file; JPEGs are
    decoded at 1/8 scale, which reads every byte at a fraction of the cost. With ``strict``
    the first bad file raises its :class:`ImageLoadError`; otherwise bad files are returned
    as :class:`SkippedImage` and counted in one logged warning.
    """
    readable: list[Path] = []
    skipped: list[SkippedImage] = []
    for item in paths:
        path = Path(item)
        try:
            _read_rgb(path, max_pixels, reduced=True)
        except ImageLoadError as error:
            if strict:
                raise
            skipped.append(SkippedImage(path, error.reason))
        else:
            readable.append(path)
    if skipped:
        logger.warning(
            "skipped %d of %d image files that cannot be read (first: %s: %s)",
            len(skipped),
            len(skipped) + len(readable),
            skipped[0].path,
            skipped[0].reason,
        )
    return readable, skipped


def write_skipped_csv(skipped: Iterable[SkippedImage], path: str | Path) -> None:
    """Write ``skipped`` as a ``path,reason`` CSV the user can open to fix or remove the files."""
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["path", "reason"])
        writer.writerows((str(item.path), item.reason) for item in skipped)


def decode_image(data: bytes, name: str, *, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """:func:`load_image` of a file's bytes already in memory (an upload); ``name`` stands for the file in errors."""
    if not data:
        raise ImageLoadError(name, "empty file (0 bytes)")
    return _read_rgb(Path(name), max_pixels, reduced=False, content=io.BytesIO(data))


def _read_rgb(path: Path, max_pixels: int, *, reduced: bool, content: BinaryIO | None = None) -> Image.Image:
    """Decode ``path`` (or its ``content``) completely and convert it; ``reduced`` lets JPEGs decode at 1/8 size."""
    with _opened(path, max_pixels, content) as image:
        if reduced:
            image.draft(None, (1, 1))
        with _pil_errors(path, max_pixels, "truncated or corrupt image data"):
            image.load()
            ImageOps.exif_transpose(image, in_place=True)
        with _pil_errors(path, max_pixels, f"cannot convert {image.mode} pixels to RGB"):
            return _to_rgb(image)


@contextmanager
def _opened(path: Path, max_pixels: int, content: BinaryIO | None = None) -> Iterator[ImageFile.ImageFile]:
    """``path`` with its header parsed and its size checked, but no pixel decoded yet.

    Pillow opens lazily, so the size check runs before any pixel memory is allocated.
    The caller decodes inside this context so that truncated files are always refused
    and Pillow's bomb warning, which our own size check replaces, stays quiet.
    """
    with _TRUNCATED_FILES_REFUSED, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with content or _open_file(path) as file:
            with _pil_errors(path, max_pixels, "damaged image header"):
                image = Image.open(file, formats=READ_FORMATS)
            with image:
                _check_pixel_count(path, image.size, max_pixels)
                yield image


def _open_file(path: Path) -> BinaryIO:
    """The file opened for reading; missing, unreadable and empty files get their own reason."""
    try:
        file = open(path, "rb")  # noqa: SIM115 (returned to the caller, who closes it)
    except OSError as error:
        raise ImageLoadError(path, f"cannot read the file ({error.strerror or error})") from error
    if os.fstat(file.fileno()).st_size == 0:
        file.close()
        raise ImageLoadError(path, "empty file (0 bytes)")
    return file


def _check_pixel_count(path: Path, size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width * height > max_pixels:
        raise ImageLoadError(
            path,
            f"image is {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{max_pixels:,} pixels (corrupt header or decompression bomb; see max_pixels)",
        )


@contextmanager
def _pil_errors(path: Path, max_pixels: int, reason: str) -> Iterator[None]:
    """Turn whatever Pillow raises about the file into an :class:`ImageLoadError`.

    Pillow's format plugins report malformed data with almost any exception type (OSError,
    SyntaxError, ValueError, struct.error, EOFError, ...), so inside this block every
    exception is the file's fault; keep the blocks small so our own bugs stay visible.
    """
    try:
        yield
    except Image.UnidentifiedImageError as error:
        raise ImageLoadError(
            path, f"not an image file, or not one of {', '.join(READ_FORMATS)} (unknown or damaged header)"
        ) from error
    except Image.DecompressionBombError as error:
        raise ImageLoadError(path, f"image is over the limit of {max_pixels:,} pixels ({error})") from error
    except Exception as error:
        raise ImageLoadError(path, f"{reason} ({type(error).__name__}: {error})") from error


class _TruncatedFilesRefused:
    """Context in which Pillow raises on truncated files, even if other code allowed them.

    ``ImageFile.LOAD_TRUNCATED_IMAGES`` is one process-wide switch that makes Pillow pad a
    cut-off file with grey instead of raising; a half-copied file must never become
    training data. The switch is turned off while any thread decodes here and restored when
    the last one finishes.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active = 0
        self._saved = False

    def __enter__(self) -> None:
        with self._lock:
            if self._active == 0:
                self._saved = ImageFile.LOAD_TRUNCATED_IMAGES
                ImageFile.LOAD_TRUNCATED_IMAGES = False
            self._active += 1

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            self._active -= 1
            if self._active == 0:
                ImageFile.LOAD_TRUNCATED_IMAGES = self._saved


_TRUNCATED_FILES_REFUSED = _TruncatedFilesRefused()


def _to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB copy of a decoded image, by the rules in the module docstring."""
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        low, high = (0.0, 1.0) if image.mode == "F" else _integer_range(image)
        return Image.fromarray(_scaled_to_8bit(np.asarray(image), low, high)).convert("RGB")
    if image.has_transparency_data:
        return _composited_on_black(image)
    return image.convert("RGB")


def _scaled_to_8bit(pixels: np.ndarray, low: float, high: float) -> np.ndarray:
    """uint8 of 16-bit, 32-bit integer or float pixels, ``low``..``high`` scaled to 0..255 (NaN: ``low``)."""
    values = np.nan_to_num(pixels.astype(np.float32), nan=low, posinf=high, neginf=low)
    scaled = np.rint((values - low) * (255.0 / (high - low)))
    return np.clip(scaled, 0, 255).astype(np.uint8)


def _integer_range(image: Image.Image) -> tuple[int, int]:
    """Smallest and largest value the file's integer sample format can hold.

    I;16 modes hold 16-bit samples. Among the read formats only TIFF gives Pillow's 32-bit
    mode I (32-bit or signed 16-bit samples), and its tags say the bit depth and sign.
    """
    if image.mode.startswith("I;16"):
        return 0, 65535
    tags = image.tag_v2 if isinstance(image, TiffImagePlugin.TiffImageFile) else {}
    bits = tags.get(TiffImagePlugin.BITSPERSAMPLE, (32,))[0]
    signed = tags.get(TiffImagePlugin.SAMPLEFORMAT, (1,))[0] == _SIGNED_SAMPLES
    low = -(1 << (bits - 1)) if signed else 0
    return low, low + (1 << bits) - 1


def _composited_on_black(image: Image.Image) -> Image.Image:
    """RGB of an image with transparency, its pixels laid over black."""
    if image.mode == "La":  # premultiplied grey + alpha (TIFF): Pillow converts it only to LA
        image = image.convert("LA")
    rgba = image.convert("RGBA")
    black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
    return Image.alpha_composite(black, rgba).convert("RGB")
