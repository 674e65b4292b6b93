"""Corroboration across poses: views of the preprocessed image, their cached extraction, and the floors they lower."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from funad import FunAD
from funad.config import FunADConfig
from funad.data.preprocessing import VIEWS, normalised_array, view_of
from funad.features.containers import MethodFeatures
from funad.inference.scorers.knn import CORROBORATION_VIEWS, NearestNeighbourScorer
from funad.persistence import MANIFEST

from conftest import TINY

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _photo(height=48, width=80, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("view, transpose", [("rot90", Image.Transpose.ROTATE_90),
                                             ("rot180", Image.Transpose.ROTATE_180),
                                             ("rot270", Image.Transpose.ROTATE_270),
                                             ("mirror", Image.Transpose.FLIP_LEFT_RIGHT)])
def test_a_view_of_the_square_input_is_the_input_of_the_turned_photo(view, transpose):
    photo = _photo()  # not square: the resize must commute with the turn
    turned_after = view_of(normalised_array(photo, 32, MEAN, STD), view)
    turned_before = normalised_array(photo.transpose(transpose), 32, MEAN, STD)
    assert turned_after.flags.c_contiguous
    # Pillow's two resize passes round to 8 bits in between: at most one grey level apart.
    assert np.abs(turned_after - turned_before).max() <= 1.01 / 255 / min(STD)


def test_views_compose_as_turns_and_an_unknown_view_is_refused():
    array = normalised_array(_photo(), 16, MEAN, STD)
    four_turns = view_of(view_of(view_of(view_of(array, "rot90"), "rot90"), "rot90"), "rot90")
    np.testing.assert_array_equal(four_turns, array)
    np.testing.assert_array_equal(view_of(view_of(array, "rot90"), "rot270"), array)
    np.testing.assert_array_equal(view_of(view_of(array, "mirror"), "mirror"), array)
    with pytest.raises(ValueError, match="unknown view 'rot30'"):
        view_of(array, "rot30")


def test_two_eighth_turns_are_a_quarter_turn_inside_the_inscribed_circle():
    smooth = Image.fromarray(np.uint8(np.add.outer(np.arange(48), 2 * np.arange(48)) % 256)).convert("RGB")
    array = normalised_array(smooth.resize((80, 48)), 48, MEAN, STD)
    twice = view_of(view_of(array, "rot45"), "rot45")
    assert twice.flags.c_contiguous and twice.dtype == np.float32 and twice.shape == array.shape
    rows, columns = np.mgrid[:48, :48] - 23.5
    inside = rows**2 + columns**2 < 16**2  # reflected corners of the first turn stay out of it
    assert np.abs(twice - view_of(array, "rot90"))[:, inside].max() < 0.15  # bilinear, twice


def test_the_config_names_every_view_set_and_only_known_views():
    choices = FunADConfig.__dataclass_fields__["knn_corroboration_views"].type
    for name in CORROBORATION_VIEWS:
        assert f"'{name}'" in choices or f'"{name}"' in choices
    assert all(view in VIEWS for views in CORROBORATION_VIEWS.values() for view in views)


def _posed_images(count=10, patches=12, dim=6, seed=0):
    """Images of the same patterns; image 0 alone holds a rare pattern, which image 1 shows only when turned."""
    rng = np.random.default_rng(seed)
    patterns = rng.normal(size=(patches, dim)).astype(np.float32)
    images = [patterns + 0.01 * rng.normal(size=patterns.shape).astype(np.float32) for _ in range(count)]
    rare = np.full(dim, 4.0, dtype=np.float32)
    images[0][3] = rare
    turned = [image.copy() for image in images]
    turned[1][7] = rare + 0.01  # another image vouches for it in this pose
    return images, turned, rare


def test_another_images_turned_copy_vouches_for_a_rare_pattern():
    images, turned, rare = _posed_images()
    features = MethodFeatures(images, {"rot90": MethodFeatures(turned)})
    upright = NearestNeighbourScorer(patch_fraction=1.0, corroborated=True).fit(features)
    posed = NearestNeighbourScorer(patch_fraction=1.0, corroborated=True, corroboration_views=["rot90"]).fit(features)
    query = torch.from_numpy(rare)[None, None]
    assert upright.score_patches(query).item() > 3.0  # no other upright image shows it
    assert posed.score_patches(query).item() < 0.1  # image 1, turned, does
    assert torch.equal(upright.bank_.patches, posed.bank_.patches)  # only the floors change


def test_an_image_never_vouches_for_itself_in_another_pose():
    images, turned, rare = _posed_images()
    turned[1][7] = turned[2][7]  # undo image 1's support
    turned[0][5] = rare  # image 0's own turned copy shows the pattern: not support
    features = MethodFeatures(images, {"rot90": MethodFeatures(turned)})
    posed = NearestNeighbourScorer(patch_fraction=1.0, corroborated=True, corroboration_views=["rot90"]).fit(features)
    assert posed.score_patches(torch.from_numpy(rare)[None, None]).item() > 3.0


def test_a_missing_view_is_a_clear_error_and_views_need_corroboration():
    images, _, _ = _posed_images()
    with pytest.raises(ValueError, match=r"corroboration view 'rot90' needs .* have \{\}"):
        NearestNeighbourScorer(corroborated=True, corroboration_views=["rot90"]).fit(MethodFeatures(images))
    with pytest.raises(ValueError, match="need corroborated=True"):
        NearestNeighbourScorer(corroboration_views=["rot90"])


def test_fit_extracts_the_views_into_the_cache_and_the_model_reloads_them(demo_data, tmp_path):
    model = FunAD(cache_dir=tmp_path / "cache", progress=False, **{**TINY, "epochs": 1},
                  knn_corroboration_views="mirror")
    model.fit(demo_data.train_dir)
    assert model.scorer_.corroboration_views == ("mirror",)
    cached = list(model.feature_cache_folder().glob("*.mirror.patches.npy"))
    assert len(cached) == len(model.train_paths_)
    upright = FunAD(cache_dir=tmp_path / "cache", progress=False, **{**TINY, "epochs": 1},
                    knn_corroboration_views="none").fit(demo_data.train_dir)
    assert not np.array_equal(upright.scorer_.vouched_, model.scorer_.vouched_)
    assert np.all(model.scorer_.vouched_ <= upright.scorer_.vouched_ + 1e-5)  # more support, never less
    loaded = FunAD.load(model.save(tmp_path / "model"))
    loaded.progress = False
    assert loaded.config.knn_corroboration_views == "mirror" and loaded.scorer_.corroboration_views == ("mirror",)
    np.testing.assert_array_equal(loaded.score(demo_data.test_paths), model.score(demo_data.test_paths))


def test_a_model_saved_before_views_existed_loads_without_them(demo_data, tmp_path):
    model = FunAD(cache_dir=False, progress=False, **{**TINY, "epochs": 1}, knn_corroboration_views="none")
    folder = model.fit(demo_data.train_dir).save(tmp_path / "model")
    manifest = folder / MANIFEST
    data = json.loads(manifest.read_text())
    data["estimator"]["config"].pop("knn_corroboration_views")
    manifest.write_text(json.dumps(data))
    loaded = FunAD.load(folder)
    assert loaded.config.knn_corroboration_views == "none"
