"""In-memory input: arrays and PIL images score and map exactly as the same pixels read from a file."""

import numpy as np
import pytest
from PIL import Image

from funad import FunAD
from funad.data.images import image_from_array

from conftest import TINY


@pytest.fixture(scope="module")
def fitted(demo_data):
    return FunAD(cache_dir=False, progress=False, pretrained=False, **TINY).fit(demo_data.train_dir)


@pytest.fixture(scope="module")
def pixels(demo_data):
    """A non-square RGB test image, its grey version and a 16-bit grey version."""
    rgb = np.asarray(Image.open(demo_data.test_paths[-1]).convert("RGB").resize((48, 40)))
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    return rgb, grey, (grey.astype(np.uint16) * 257 + 3)


def _save(array, path):
    Image.fromarray(array).save(path)
    return path


def test_arrays_and_pil_images_match_the_same_image_read_from_png(fitted, pixels, tmp_path):
    rgb, grey, grey16 = pixels
    files = [_save(rgb, tmp_path / "rgb.png"), _save(grey, tmp_path / "grey.png"),
             _save(grey16, tmp_path / "grey16.png")]
    in_memory = [rgb, grey, grey16]
    file_results = list(fitted.predict(files))
    for variants, expected in zip([[rgb, Image.fromarray(rgb), rgb / 255.0, rgb.astype(np.float32) / 255],
                                   [grey, grey[..., None], Image.fromarray(grey)],
                                   [grey16, Image.fromarray(grey16)]], file_results):
        for variant in variants:
            (result,) = fitted.predict(variant)
            assert result.path is None and result.error is None
            assert result.score == pytest.approx(expected.score, rel=1e-6)
            np.testing.assert_allclose(result.anomaly_map, expected.anomaly_map, rtol=1e-5, atol=1e-6)
            assert result.anomaly_map.shape == (40, 48)
    # a list mixing files and arrays: one result per input, in order
    mixed = fitted.score([in_memory[0], files[1], in_memory[2]])
    np.testing.assert_allclose(mixed, [r.score for r in file_results], rtol=1e-6)
    # a file given twice is scored twice: the scores still line up with the inputs
    repeated = fitted.score([files[1], files[1], in_memory[2]])
    np.testing.assert_allclose(repeated, [r.score for r in file_results[1:2] * 2 + file_results[2:]], rtol=1e-6)
    assert [m.shape for m in fitted.anomaly_maps(in_memory)] == [(40, 48)] * 3


def test_arrays_that_are_not_images_are_refused_by_position(fitted, pixels):
    rgb = pixels[0]
    with pytest.raises(ValueError, match=r"input 1: an array of shape \(40, 48, 2\) is not an image"):
        list(fitted.predict([rgb, rgb[..., :2]]))
    with pytest.raises(ValueError, match="input 0: pixels of type int32 are not supported"):
        fitted.score(rgb.astype(np.int32))


def test_float_arrays_are_clipped_to_0_1_and_nan_is_black():
    values = np.array([[-0.5, 0.0, 0.5], [1.0, 2.0, np.nan]], dtype=np.float64)
    grey = np.asarray(image_from_array(values))[..., 0]
    np.testing.assert_array_equal(grey, [[0, 0, 128], [255, 255, 0]])
