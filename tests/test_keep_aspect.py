"""The aspect ratio (``aspect``): a letterboxed image's map covers the image alone, in funad, its benchmark and the
exported graph alike; ``auto`` (the default) keeps the aspect when the training images' shapes differ."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from funad import FunAD
from funad.config import POOL_MAX_PATCHES
from funad.data.preprocessing import normalised_array
from funad.inference.maps import patch_scores_to_maps
from funad.inference.regions import training_pixel_threshold
from funad.runtime import OnnxModel
from funad.utils.letterbox import cells_shown, content_box, kept_aspect_side, shapes_differ
from test_maps import step_by_step

from conftest import TINY, fit_save_and_export

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def test_content_box_centres_the_longer_side_on_the_square():
    assert content_box(300, 300, 224, True) == (0, 224, 0, 224)
    assert content_box(400, 200, 224, True) == (56, 112, 0, 224)  # wide: rows in the middle
    assert content_box(100, 250, 224, True) == (0, 224, 67, 90)  # tall: columns in the middle
    assert content_box(400, 200, 224, False) == (0, 224, 0, 224)  # stretched over the square
    assert content_box(1000, 1, 224, True)[1] == 1  # never an empty stretch


def test_a_letterboxed_input_is_the_resized_image_between_margins_of_its_own_mean_colour():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (30, 90, 3), dtype=np.uint8))
    array = normalised_array(image, 60, MEAN, STD, keep_aspect=True)
    assert array.shape == (3, 60, 60) and array.dtype == np.float32
    top, rows, left, columns = content_box(90, 30, 60, True)
    assert (top, rows, left, columns) == (20, 20, 0, 60)
    resized = np.asarray(image.resize((columns, rows), Image.Resampling.BILINEAR), dtype=np.float32)
    inside = ((resized / 255.0 - np.asarray(MEAN, np.float32)) / np.asarray(STD, np.float32)).transpose(2, 0, 1)
    np.testing.assert_allclose(array[:, top:top + rows], inside, atol=1e-6)
    own_mean = np.round(resized.reshape(-1, 3).mean(axis=0)) / 255.0  # the margins: the image's own mean colour
    margin = ((own_mean - np.asarray(MEAN)) / np.asarray(STD)).astype(np.float32)
    for rows_of_margin in (array[:, :top], array[:, top + rows:]):
        np.testing.assert_allclose(rows_of_margin, np.broadcast_to(margin[:, None, None], rows_of_margin.shape),
                                   atol=1e-6)
    stretched = normalised_array(image, 60, MEAN, STD)
    assert np.abs(stretched[:, :top]).max() > 0.5  # without keep_aspect the image fills the square


@pytest.mark.parametrize(("content", "size"), [((16, 32, 0, 64), (30, 60)), ((0, 64, 20, 24), (250, 90))])
def test_a_letterboxed_map_is_the_whole_input_map_cut_to_the_image_then_resized(content, size):
    scores = torch.rand(2, 64, generator=torch.Generator().manual_seed(0))
    maps = patch_scores_to_maps(scores, (8, 8), 64, 2.0, size, content)
    top, rows, left, columns = content
    whole = step_by_step(scores, (8, 8), 64, 2.0, (64, 64))[:, top:top + rows, left:left + columns]
    expected = torch.nn.functional.interpolate(whole[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(maps, expected, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def wide_and_boxed(demo_data, tmp_path_factory):
    """A wide test image (64 x 32: no resizing at 64 px) and the same image letterboxed by hand."""
    folder = tmp_path_factory.mktemp("aspect")
    photo = Image.open(demo_data.test_paths[-1]).convert("RGB")
    wide = photo.crop((0, 16, 64, 48))
    own_mean = np.asarray(wide, dtype=np.float32).reshape(-1, 3).mean(axis=0)
    boxed = Image.new("RGB", (64, 64), tuple(int(round(float(value))) for value in own_mean))
    boxed.paste(wide, (0, 16))
    wide.save(folder / "wide.png")
    boxed.save(folder / "boxed.png")
    return folder / "wide.png", folder / "boxed.png"


@pytest.fixture(scope="module")
def letterboxing(demo_data, tmp_path_factory):
    model, folder = fit_save_and_export(demo_data.train_dir, tmp_path_factory.mktemp("letterboxing"), aspect="keep")
    assert model.backbone.preprocessing.keep_aspect
    return model, folder


def test_a_wide_image_scores_and_maps_as_its_letterbox_cut_to_the_image(letterboxing, wide_and_boxed):
    model, _ = letterboxing
    wide, boxed = (next(model.predict(path)) for path in wide_and_boxed)
    assert wide.score == pytest.approx(boxed.score, rel=1e-5)
    assert wide.anomaly_map.shape == (32, 64) and boxed.anomaly_map.shape == (64, 64)
    np.testing.assert_allclose(wide.anomaly_map, boxed.anomaly_map[16:48], rtol=1e-4, atol=1e-5)
    stretched = FunAD(pretrained=False, progress=False, **TINY, aspect="stretch")
    assert not stretched.backbone.preprocessing.keep_aspect
    assert stretched.backbone.describe() != model.backbone.describe()  # features cached apart


def test_the_exported_graph_and_a_reloaded_model_letterbox_alike(letterboxing, wide_and_boxed):
    model, folder = letterboxing
    wide = wide_and_boxed[0]
    expected = next(model.predict(wide))
    runtime = OnnxModel(folder / "model.onnx")
    assert runtime.preprocessing.keep_aspect
    exported = next(runtime.predict([wide]))
    assert exported.score == pytest.approx(expected.score, rel=1e-4)
    np.testing.assert_allclose(exported.anomaly_map, expected.anomaly_map, atol=1e-3)
    reloaded = next(FunAD.load(folder / "model").predict(wide))
    assert reloaded.score == expected.score
    np.testing.assert_array_equal(reloaded.anomaly_map, expected.anomaly_map)


def test_a_model_saved_before_the_setting_keeps_stretching(letterboxing, tmp_path):
    """Its manifest has no aspect key and its backbone description no keep_aspect: it loads as fitted, stretched."""
    model, folder = letterboxing
    stretched = FunAD(pretrained=False, progress=False, **TINY, aspect="stretch")
    stretched.fitted_ = model.fitted_
    stretched.save(tmp_path / "old")
    manifest_path = tmp_path / "old" / "model.json"
    manifest = json.loads(manifest_path.read_text())
    estimator = manifest.get("estimator", manifest)
    del estimator["config"]["aspect"]
    assert "keep_aspect" not in estimator["backbone"]["preprocessing"]
    manifest_path.write_text(json.dumps(manifest))
    loaded = FunAD.load(tmp_path / "old")
    assert loaded.config.aspect == "stretch" and not loaded.backbone.preprocessing.keep_aspect


def test_a_square_image_is_the_same_input_either_way():
    """So bottle's and screw's figures hold whatever the aspect setting (their photos are square)."""
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (80, 80, 3), dtype=np.uint8))
    np.testing.assert_array_equal(normalised_array(image, 56, MEAN, STD, keep_aspect=True),
                                  normalised_array(image, 56, MEAN, STD, keep_aspect=False))


def test_auto_keeps_the_aspect_only_when_the_training_images_shapes_differ():
    assert not shapes_differ([(320, 240)] * 40)  # one shape (4:3): stretched alike, every row of the input used
    for odd in ((100, 300), (300, 100)):  # one odd photo in 41, tall or wide, does not decide
        assert not shapes_differ([(256, 256)] * 40 + [odd])
    assert shapes_differ([(200, 500), (300, 300), (530, 260)] * 10)  # magnetic tile's spread
    assert not shapes_differ([])


def square_and_wide_photos(demo_data, folder, count=None):
    """The demo's training photos in ``folder``, every other one cut to 2:1 (64 x 32)."""
    folder.mkdir()
    for index, path in enumerate(sorted(demo_data.train_dir.glob("*.png"))[:count]):
        photo = Image.open(path)
        (photo.crop((0, 0, 64, 32)) if index % 2 else photo).save(folder / path.name)
    return folder


def test_fit_chooses_the_aspect_from_its_images_and_saves_the_choice(demo_data, tmp_path):
    folder = square_and_wide_photos(demo_data, tmp_path / "shapes")
    model = FunAD(pretrained=False, progress=False, **TINY).fit(folder)
    assert model.config.aspect == "auto" and model.keep_aspect_ and model.backbone.preprocessing.keep_aspect
    model.save(tmp_path / "model")
    loaded = FunAD.load(tmp_path / "model")
    assert loaded.config.aspect == "keep" and loaded.backbone.preprocessing.keep_aspect
    square = FunAD(pretrained=False, progress=False, **TINY).fit(demo_data.train_dir)
    assert not square.keep_aspect_ and not square.backbone.preprocessing.keep_aspect


def test_letterboxed_photos_get_an_input_that_keeps_the_median_shorter_side():
    assert kept_aspect_side([(300, 300)] * 5, 224, 14) == 224  # square photos: the backbone's own side
    tile_like = [(358, 257)] * 3 + [(200, 500)]  # median longer / shorter side 1.39: 312 px, rounded up to 23 x 14
    assert kept_aspect_side(tile_like, 224, 14) == 322
    assert kept_aspect_side([(257, 358)] * 3, 224, 14) == 322  # tall as wide
    assert kept_aspect_side([(1000, 100)], 224, 14) == 448  # at most twice the own side
    assert kept_aspect_side([(225, 224)], 224, 14) == 238  # any enlargement rounds up to a whole patch
    assert kept_aspect_side([], 224, 14) == 224


def test_fit_enlarges_a_letterboxed_input_for_its_photos_and_saves_it(demo_data, tmp_path):
    folder = square_and_wide_photos(demo_data, tmp_path / "shapes", count=8)
    settings = {**TINY, "image_size": None}
    model = FunAD(pretrained=False, progress=False, **settings).fit(folder)
    own = FunAD(pretrained=False, progress=False, **settings).backbone  # not chosen yet: the backbone's own input
    own_side, patch = own.preprocessing.image_size, own.preprocessing.image_size // own.grid[0]
    side = model.backbone.preprocessing.image_size
    assert model.keep_aspect_ and model.image_size_ == side == own_side * 3 // 2  # median of 1 and 2: 1.5
    assert model.backbone.grid == (side // patch, side // patch)
    scaled_cap = POOL_MAX_PATCHES * (side // patch) ** 2 // (own_side // patch) ** 2
    assert model.scorer_.pool_max_patches == scaled_cap  # the same share of the (more) training patches
    model.save(tmp_path / "model")
    loaded = FunAD.load(tmp_path / "model")
    assert loaded.config.image_size == side and loaded.config.knn_pool_max_patches == scaled_cap
    photo = sorted(folder.glob("*.png"))[1]
    assert loaded.score(photo) == model.score(photo)
    given = FunAD(pretrained=False, progress=False, **TINY).choose_preprocessing(sorted(folder.glob("*.png")))
    assert given.keep_aspect_ and given.input_side() == TINY["image_size"]  # a given image_size is kept
    assert set(given.resolved_preprocessing()) == {"aspect", "align"}


def test_the_pixel_threshold_reads_only_the_patches_a_letterboxed_map_shows():
    box = content_box(64, 32, 64, True)  # a 2:1 photo on a 64 px input with an 8 x 8 grid
    shown = cells_shown(box, (8, 8), 64).reshape(8, 8)
    assert shown[2:6].all() and not shown[:2].any() and not shown[6:].any()  # centres 20..44 in rows 16..48
    assert cells_shown(content_box(50, 50, 64, True), (8, 8), 64).all()

    class Margins:  # margin patches score 100, the photo's 0..1
        def score_patches(self, batch):
            return torch.where(torch.from_numpy(shown.reshape(-1)), batch[..., 0], torch.tensor(100.0))

    class Features:
        num_patches = 64

        def take(self, indices):
            return torch.rand(len(indices), 64, 1, generator=torch.Generator().manual_seed(0))

    masks = np.stack([shown.reshape(-1)] * 4)
    assert training_pixel_threshold(Margins(), Features(), np.arange(4), 0.999, shown=masks) <= 1.0
    assert training_pixel_threshold(Margins(), Features(), np.arange(4), 0.999) == pytest.approx(100.0)
