"""Reading messy image folders: every file either becomes 8-bit RGB or an ImageLoadError."""

from __future__ import annotations

import csv
import io
import logging
import os
import struct
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from funad.data.images import (
    IMAGE_EXTENSIONS,
    MAX_IMAGE_PIXELS,
    ImageLoadError,
    SkippedImage,
    check_images,
    discover_images,
    image_size,
    load_image,
    to_array,
    write_skipped_csv,
)


def save(image: Image.Image, path: Path, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)
    return path


def pixels(path: Path) -> np.ndarray:
    return to_array(load_image(path)).astype(int)


def encoded(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def png_claiming_size(width: int, height: int) -> bytes:
    """A small valid PNG whose IHDR (CRC fixed up) claims ``width`` x ``height``."""
    data = bytearray(encoded(Image.new("L", (1, 1)), "PNG"))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


# --- conversion of pixel modes ---------------------------------------------------------------


def test_greyscale_becomes_equal_rgb_channels(tmp_path):
    grey = np.array([[0, 100, 255]], dtype=np.uint8)
    out = pixels(save(Image.fromarray(grey), tmp_path / "grey.png"))
    assert out.shape == (1, 3, 3)
    assert (out == grey[..., None]).all()


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_composited_onto_black(tmp_path, mode):
    rgba = np.array([[[200, 200, 200, 255], [200, 200, 200, 0], [200, 200, 200, 128]]], dtype=np.uint8)
    out = pixels(save(Image.fromarray(rgba).convert(mode), tmp_path / "alpha.png"))
    assert (out[0, 0] == 200).all()  # opaque: unchanged
    assert (out[0, 1] == 0).all()  # transparent: black
    assert np.allclose(out[0, 2], 100, atol=1)  # half transparent: half way to black


def test_palette_transparency_is_composited_onto_black(tmp_path):
    image = Image.new("P", (2, 1))
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    image.putdata([0, 1])
    out = pixels(save(image, tmp_path / "palette.png", transparency=0))
    assert out[0, 0].tolist() == [0, 0, 0]
    assert out[0, 1].tolist() == [0, 255, 0]


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    cmyk = Image.new("CMYK", (16, 8), (0, 0, 0, 0))
    cmyk.paste((0, 0, 0, 255), (8, 0, 16, 8))
    out = pixels(save(cmyk, tmp_path / "cmyk.jpg"))
    assert out.shape == (8, 16, 3)
    assert (out[:, :4] > 245).all()  # no ink: white
    assert (out[:, 12:] < 10).all()  # full black ink: black


def test_16bit_png_is_scaled_by_its_bit_depth_not_clipped(tmp_path):
    values = np.array([[0, 257, 1000, 32896, 65535]], dtype=np.uint16)
    path = save(Image.fromarray(values), tmp_path / "deep.png")
    assert Image.open(path).mode == "I;16"
    assert pixels(path)[0, :, 0].tolist() == [0, 1, 4, 128, 255]


def test_big_endian_16bit_tiff_is_scaled_the_same(tmp_path):
    values = np.array([[0, 257, 65535]], dtype=np.uint16)
    image = Image.frombytes("I;16B", (3, 1), values.astype(">u2").tobytes())
    path = save(image, tmp_path / "deep.tif")
    assert Image.open(path).mode == "I;16B"
    assert pixels(path)[0, :, 0].tolist() == [0, 1, 255]


def test_32bit_integer_tiff_is_scaled_by_its_declared_signed_range(tmp_path):
    values = np.array([[-(2**31), 0, 2**31 - 1]], dtype=np.int32)
    path = save(Image.fromarray(values), tmp_path / "int32.tif")
    assert Image.open(path).mode == "I"
    assert pixels(path)[0, :, 0].tolist() == [0, 128, 255]


def test_float_tiff_is_read_as_0_to_1_clipped_with_nan_as_black(tmp_path):
    values = np.array([[0.0, 0.5, 1.0, -3.0, 7.0, np.nan]], dtype=np.float32)
    path = save(Image.fromarray(values), tmp_path / "float.tif")
    assert Image.open(path).mode == "F"
    assert pixels(path)[0, :, 0].tolist() == [0, 128, 255, 0, 255, 0]


def test_one_bit_image_becomes_black_and_white(tmp_path):
    bits = Image.fromarray(np.array([[False, True]]))
    assert bits.mode == "1"
    assert pixels(save(bits, tmp_path / "bits.png"))[0, :, 0].tolist() == [0, 255]


def test_exif_orientation_is_applied_and_image_size_agrees(tmp_path):
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (20, 0, 40, 20))  # left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: turn 90 degrees clockwise to view
    path = save(image, tmp_path / "rotated.jpg", exif=exif)

    loaded = load_image(path)
    assert loaded.size == (20, 40)
    assert image_size(path) == (40, 20)
    out = to_array(loaded).astype(int)
    assert out[5, 10, 0] > 200 and out[5, 10, 2] < 50  # the left half is now on top
    assert out[35, 10, 2] > 200 and out[35, 10, 0] < 50


def test_image_size_is_height_then_width(tmp_path):
    path = save(Image.new("RGB", (30, 10)), tmp_path / "wide.png")
    assert image_size(path) == (10, 30)


def test_to_array_refuses_images_not_from_load_image():
    with pytest.raises(ValueError, match="mode I;16"):
        to_array(Image.new("I;16", (2, 2)))


# --- broken files ----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_truncated_files_are_refused(tmp_path, suffix):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    path = save(Image.fromarray(noise), tmp_path / f"cut{suffix}")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ImageLoadError, match="truncated") as caught:
        load_image(path)
    assert caught.value.path == path
    assert str(caught.value).startswith(f"{path}: ")


def test_truncated_files_are_refused_even_when_pillow_is_told_to_accept_them(tmp_path, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    noise = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    path = save(Image.fromarray(noise), tmp_path / "cut.jpg")
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(ImageLoadError, match="truncated"):
        load_image(path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the other code's setting is restored


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.png", b"", "empty file"),
        ("noise.png", bytes(np.random.default_rng(2).integers(0, 256, 4096, dtype=np.uint8)), "not an image"),
        ("Thumbs.db", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504), "not an image"),
        ("notes.txt", b"operator notes\n", "not an image"),
    ],
)
def test_non_images_are_refused_with_a_clear_reason(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageLoadError, match=reason) as caught:
        load_image(path)
    assert isinstance(caught.value, ValueError)
    assert caught.value.path == path and reason in caught.value.reason


def test_missing_file_is_an_image_load_error(tmp_path):
    with pytest.raises(ImageLoadError, match="cannot read the file"):
        load_image(tmp_path / "gone.png")


def test_formats_outside_the_supported_list_are_refused(tmp_path):
    path = save(Image.new("RGB", (4, 4)), tmp_path / "frame.gif", format="GIF")
    with pytest.raises(ImageLoadError, match="not one of PNG, JPEG"):
        load_image(path)


# --- decompression bombs ---------------------------------------------------------------------


def decodes_recorder(monkeypatch) -> list:
    calls: list = []
    original = ImageFile.ImageFile.load

    def recording_load(self):
        calls.append(self.size)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", recording_load)
    return calls


def test_oversized_header_is_refused_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_claiming_size(12_000, 12_000))  # 144 Mpx: over our limit, under Pillow's
    decodes = decodes_recorder(monkeypatch)
    for read in (load_image, image_size):
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # Pillow's bomb warning must not escape either
            with pytest.raises(ImageLoadError) as caught:
                read(path)
        assert time.perf_counter() - started < 1.0
        assert "12000x12000" in caught.value.reason
        assert f"{MAX_IMAGE_PIXELS:,}" in caught.value.reason
    assert decodes == []


def test_header_over_pillows_own_limit_is_our_error_too(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_claiming_size(30_000, 30_000))
    decodes = decodes_recorder(monkeypatch)
    with pytest.raises(ImageLoadError, match=f"limit of {MAX_IMAGE_PIXELS:,} pixels") as caught:
        load_image(path)
    assert "900000000" in caught.value.reason
    assert decodes == []


def test_max_pixels_overrides_the_limit(tmp_path):
    path = save(Image.new("RGB", (100, 50)), tmp_path / "small.png")
    with pytest.raises(ImageLoadError, match="100x50 = 5,000 pixels, over the limit of 4,999"):
        load_image(path, max_pixels=4_999)
    assert load_image(path, max_pixels=5_000).size == (100, 50)
    readable, skipped = check_images([path], max_pixels=4_999)
    assert readable == [] and "4,999" in skipped[0].reason


# --- discovery -------------------------------------------------------------------------------


def test_discover_searches_folders_recursively_in_sorted_order(tmp_path):
    pixel = Image.new("RGB", (2, 2))
    for name in ["b/2.png", "b/1.JPG", "a.jpeg", "b/deep/er/3.tiff", "c/4.webp", "c/5.bmp", "c/6.tif"]:
        save(pixel, tmp_path / name, format="PNG")
    (tmp_path / "c" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (tmp_path / "c" / "notes.txt").write_text("x")
    save(pixel, tmp_path / ".cache" / "hidden.png")
    save(pixel, tmp_path / "b" / ".hidden.png")
    save(pixel, tmp_path / "b" / "._1.JPG", format="PNG")  # macOS resource fork
    (tmp_path / "empty").mkdir()

    found = discover_images(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "a.jpeg",
        "b/1.JPG",
        "b/2.png",
        "b/deep/er/3.tiff",
        "c/4.webp",
        "c/5.bmp",
        "c/6.tif",
    ]
    assert discover_images(str(tmp_path)) == found
    assert discover_images(tmp_path / "empty") == []


def test_discover_keeps_explicit_files_and_input_order_without_duplicates(tmp_path):
    pixel = Image.new("RGB", (2, 2))
    first = save(pixel, tmp_path / "z" / "1.png")
    second = save(pixel, tmp_path / "z" / "2.png")
    odd = tmp_path / ".odd.dat"
    odd.write_bytes(b"x")

    found = discover_images([odd, second, tmp_path / "z", tmp_path / "z" / ".." / "z", tmp_path])
    assert found == [odd, second, first]


def test_discover_names_a_missing_path(tmp_path):
    missing = tmp_path / "typo"
    with pytest.raises(FileNotFoundError, match="typo") as caught:
        discover_images([tmp_path, missing])
    assert caught.value.filename == str(missing)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")
def test_discover_follows_linked_folders_once_without_looping(tmp_path):
    save(Image.new("RGB", (2, 2)), tmp_path / "data" / "1.png")
    (tmp_path / "data" / "loop").symlink_to(tmp_path / "data", target_is_directory=True)
    (tmp_path / "link").symlink_to(tmp_path / "data", target_is_directory=True)
    assert discover_images(tmp_path) == [tmp_path / "data" / "1.png"]


def test_image_extensions_are_lower_case_suffixes():
    assert all(ext.startswith(".") and ext == ext.lower() for ext in IMAGE_EXTENSIONS)


# --- checking and reporting ------------------------------------------------------------------


@pytest.fixture
def mixed_folder(tmp_path) -> dict[str, Path]:
    noise = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    files = {
        "good_jpg": save(Image.fromarray(noise), tmp_path / "a_good.jpg"),
        "good_png": save(Image.fromarray(noise), tmp_path / "b_good.png"),
        "cut_jpg": save(Image.fromarray(noise), tmp_path / "c_cut.jpg"),
        "empty": tmp_path / "d_empty.png",
    }
    files["cut_jpg"].write_bytes(files["cut_jpg"].read_bytes()[:-300])
    files["empty"].write_bytes(b"")
    return files


def test_check_images_skips_bad_files_with_reasons_and_one_warning(mixed_folder, caplog):
    with caplog.at_level(logging.WARNING, logger="funad.data.images"):
        readable, skipped = check_images(discover_images(mixed_folder["good_jpg"].parent))
    assert readable == [mixed_folder["good_jpg"], mixed_folder["good_png"]]
    assert [s.path for s in skipped] == [mixed_folder["cut_jpg"], mixed_folder["empty"]]
    assert "truncated" in skipped[0].reason and "empty" in skipped[1].reason
    warnings_logged = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings_logged) == 1 and "skipped 2 of 4" in warnings_logged[0].getMessage()


def test_check_images_is_silent_when_everything_reads(mixed_folder, caplog):
    with caplog.at_level(logging.WARNING, logger="funad.data.images"):
        readable, skipped = check_images([str(mixed_folder["good_png"])])
    assert readable == [mixed_folder["good_png"]] and skipped == []
    assert caplog.records == []


def test_check_images_strict_raises_on_the_first_bad_file(mixed_folder):
    ordered = [mixed_folder[key] for key in ("good_jpg", "cut_jpg", "empty")]
    with pytest.raises(ImageLoadError) as caught:
        check_images(ordered, strict=True)
    assert caught.value.path == mixed_folder["cut_jpg"]
    assert str(mixed_folder["cut_jpg"]) in str(caught.value)


def test_write_skipped_csv_round_trips(tmp_path):
    skipped = [SkippedImage(Path("x/a, b.png"), 'empty file "0"'), SkippedImage(Path("y.jpg"), "truncated")]
    out = tmp_path / "skipped.csv"
    write_skipped_csv(skipped, out)
    with open(out, newline="", encoding="utf-8") as file:
        rows = list(csv.reader(file))
    assert rows == [["path", "reason"], [str(Path("x/a, b.png")), 'empty file "0"'], ["y.jpg", "truncated"]]


# --- fuzzing ---------------------------------------------------------------------------------

# (mode, format) pairs Pillow can write; each is decoded back through load_image.
WRITABLE = [
    ("1", "PNG"),
    ("L", "PNG"),
    ("LA", "PNG"),
    ("P", "PNG"),
    ("RGB", "PNG"),
    ("RGBA", "PNG"),
    ("I;16", "PNG"),
    ("L", "JPEG"),
    ("RGB", "JPEG"),
    ("CMYK", "JPEG"),
    ("F", "TIFF"),
    ("I", "TIFF"),
    ("I;16", "TIFF"),
    ("RGBA", "TIFF"),
    ("RGB", "BMP"),
    ("RGB", "WEBP"),
]


def random_image(mode: str, width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    if mode == "F":
        return Image.fromarray(rng.normal(0.5, 0.5, (height, width)).astype(np.float32))
    if mode == "I":
        return Image.fromarray(rng.integers(-(2**31), 2**31 - 1, (height, width), dtype=np.int32))
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 2**16, (height, width), dtype=np.uint16))
    rgba = Image.fromarray(rng.integers(0, 256, (height, width, 4), dtype=np.uint8))
    return rgba.convert("RGB").convert(mode) if mode in ("P", "1") else rgba.convert(mode)


@st.composite
def image_files(draw) -> tuple[bytes, tuple[int, int] | None]:
    """File bytes and the size load_image must return if it accepts them (None: any size)."""
    kind = draw(st.sampled_from(["image", "truncated image", "noise"]))
    if kind == "noise":
        magic = draw(st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"II*\x00", b"BM", b"RIFF"]))
        return magic + draw(st.binary(max_size=2048)), None
    mode, image_format = draw(st.sampled_from(WRITABLE))
    size = (draw(st.integers(1, 48)), draw(st.integers(1, 48)))
    data = encoded(random_image(mode, *size, seed=draw(st.integers(0, 2**32 - 1))), image_format)
    if kind == "truncated image":
        data = data[: draw(st.integers(0, len(data) - 1))]
    return data, size


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=image_files(), suffix=st.sampled_from([".png", ".jpg", ".tif", ".bin"]))
def test_fuzz_load_image_returns_rgb_or_raises_image_load_error(tmp_path_factory, case, suffix):
    data, size = case
    path = tmp_path_factory.mktemp("fuzz") / f"input{suffix}"
    path.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow may warn about odd metadata in damaged files
        try:
            image = load_image(path)
        except ImageLoadError as error:
            assert error.path == path and error.reason
            return
    assert image.mode == "RGB"
    assert to_array(image).shape == (image.height, image.width, 3)
    if size is not None:
        assert image.size == size
