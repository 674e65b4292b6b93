"""End to end: fit / score / maps / save / load on tiny images."""

import json
import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image

from funad import FunAD
from funad.persistence import ModelFormatError

from conftest import TINY


@pytest.fixture(scope="module")
def fitted(demo_data):
    return FunAD(cache_dir=False, progress=False, **TINY).fit(demo_data.train_dir)


def test_fit_learns_attributes(fitted, demo_data):
    assert len(fitted.train_paths_) == 20
    assert fitted.train_scores_.shape == (20,)
    assert fitted.judged_normal_.dtype == bool and fitted.judged_normal_.any()
    assert len(fitted.history_) == TINY["epochs"]


def test_predict_gives_one_result_per_input_even_for_an_unreadable_image(fitted, demo_data, tmp_path, caplog):
    unreadable = tmp_path / "unreadable.png"
    unreadable.write_bytes(b"not an image")
    inputs = [demo_data.test_paths[0], unreadable, demo_data.test_paths[1]]
    predictions = list(fitted.predict(inputs))
    assert [p.path for p in predictions] == inputs
    assert predictions[1].error and predictions[1].anomaly_map is None and np.isnan(predictions[1].score)
    assert predictions[0].error is None and predictions[2].error is None
    scores = fitted.score(inputs)
    assert np.isnan(scores[1]) and np.isfinite(scores[[0, 2]]).all()
    assert str(unreadable) in caplog.text
    maps = fitted.anomaly_maps(inputs)
    assert maps[1] is None and maps[0].shape == (64, 64)


def test_fit_leaves_the_callers_global_random_sequence_alone(demo_data):
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    FunAD(cache_dir=False, progress=False, **TINY).fit(demo_data.train_dir)
    assert torch.equal(torch.rand(4), expected)


def test_scores_and_maps(fitted, demo_data, tmp_path):
    odd = tmp_path / "odd.png"  # a non-square image keeps its own size in the map
    Image.open(demo_data.test_paths[0]).resize((50, 30)).save(odd)
    scores = fitted.score(demo_data.test_paths + [odd])
    maps = fitted.anomaly_maps(demo_data.test_paths + [odd])
    assert scores.shape == (9,) and np.isfinite(scores).all()
    assert maps[0].shape == (64, 64) and maps[-1].shape == (30, 50)
    assert all(m.dtype == np.float32 for m in maps)
    # maps lie within the range of the patch scores they are drawn from (stricter floors than the image
    # score's, so never below it at the image's highest patch: knn_map_corroboration_images)
    features = fitted.extract(demo_data.test_paths + [odd]).method_features("patch")
    map_patch_scores, image_scores = fitted.scorer_.score(features.take(range(len(features))).float())
    np.testing.assert_allclose(image_scores.numpy(), scores, rtol=1e-3)  # extract() keeps fp16 features
    assert all(m.max() <= p.max() + 1e-5 for m, p in zip(maps, map_patch_scores))
    assert (map_patch_scores.amax(dim=1) >= image_scores - 1e-6).all()


def test_save_load_gives_identical_scores(fitted, demo_data, tmp_path):
    directory = fitted.save(tmp_path / "model")
    assert {p.name for p in directory.iterdir()} == {"model.safetensors", "model.json"}
    manifest = json.loads((directory / "model.json").read_text())
    assert manifest["estimator"]["config"]["epochs"] == TINY["epochs"] and "torch" in manifest["versions"]
    loaded = FunAD.load(directory)
    loaded.progress = False
    np.testing.assert_array_equal(loaded.score(demo_data.test_paths), fitted.score(demo_data.test_paths))


def test_tampered_model_is_refused(fitted, tmp_path):
    directory = fitted.save(tmp_path / "model")
    tensors = directory / "model.safetensors"
    data = bytearray(tensors.read_bytes())
    data[-5] ^= 0xFF
    tensors.write_bytes(bytes(data))
    with pytest.raises(ModelFormatError, match="checksum"):
        FunAD.load(directory)


def test_same_seed_same_scores(demo_data):
    first = FunAD(cache_dir=False, progress=False, **TINY).fit(demo_data.train_dir)
    second = FunAD(cache_dir=False, progress=False, **TINY).fit(demo_data.train_dir)
    np.testing.assert_array_equal(first.train_scores_, second.train_scores_)


def test_image_level_mode(demo_data):
    model = FunAD(cache_dir=False, progress=False, level="image", **TINY).fit(demo_data.train_dir)
    maps = model.anomaly_maps(demo_data.test_paths[:2])
    scores = model.score(demo_data.test_paths[:2])
    assert np.allclose(maps[0], scores[0])  # one score per image: the map is constant
    # One vector per image: the bank holds every training image's (no coreset of them).
    assert len(model.scorer_.bank_) == len(model.train_paths_)
    np.testing.assert_array_equal(np.sort(model.scorer_.bank_.image_ids), np.arange(len(model.train_paths_)))


def test_too_few_images_is_a_clear_error(demo_data, tmp_path):
    folder = tmp_path / "few"
    folder.mkdir()
    for path in sorted(demo_data.train_dir.glob("*.png"))[:3]:
        (folder / path.name).write_bytes(path.read_bytes())
    with pytest.raises(ValueError, match=r"at least 8 .* found 3 in .*few"):
        FunAD(cache_dir=False, progress=False, **TINY).fit(folder)


def test_a_knn_share_of_one_image_banks_two(demo_data):
    # 0.05 of 20 images rounds to 1: each image is scored without its own entries, so one would leave nothing
    model = FunAD(cache_dir=False, progress=False, **{**TINY, "epochs": 1}, knn_normal_share=0.05)
    model.fit(demo_data.train_dir)
    assert len(np.unique(model.scorer_.bank_.image_ids)) == 2
    assert np.isfinite(model.train_predict_scores_).all() and np.isfinite(model.threshold_)


def test_softened_corroboration_is_saved_and_loaded_with_the_model(demo_data, tmp_path):
    model = FunAD(cache_dir=False, progress=False, **{**TINY, "epochs": 1}, knn_corroboration_quantile=0.5)
    model.fit(demo_data.train_dir)
    assert model.scorer_.corroboration_quantile == 0.5
    loaded = FunAD.load(model.save(tmp_path / "model"))
    loaded.progress = False
    assert loaded.config.knn_corroboration_quantile == 0.5 and loaded.scorer_.corroboration_quantile == 0.5
    np.testing.assert_array_equal(loaded.score(demo_data.test_paths), model.score(demo_data.test_paths))


def test_the_threshold_tail_widths_set_the_fitted_threshold(demo_data):
    from funad.method.threshold import estimate_threshold

    model = FunAD(cache_dir=False, progress=False, threshold_tail_widths=0.5, **TINY).fit(demo_data.train_dir)
    scores, split = model.train_predict_scores_, model.judged_normal_
    assert model.threshold_ == estimate_threshold(scores, split, tail_widths=0.5).threshold
    assert estimate_threshold(scores, split, tail_widths=0.5).method == "robust tail"  # so the widths decide
    assert model.threshold_ < estimate_threshold(scores, split).threshold


def test_save_never_deletes_a_folder_that_holds_no_model(fitted, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "part.png").write_bytes(b"the user's photo")
    with pytest.raises(FileExistsError, match="holds no funad model: saving would delete what it holds"):
        fitted.save(photos)
    assert (photos / "part.png").read_bytes() == b"the user's photo"
    a_file = tmp_path / "notes.txt"
    a_file.write_text("kept")
    with pytest.raises(FileExistsError):
        fitted.save(a_file)
    assert a_file.read_text() == "kept"
    model_dir = fitted.save(tmp_path / "model")
    assert fitted.save(model_dir) == model_dir  # a model saved before is replaced
    empty = tmp_path / "empty"
    empty.mkdir()
    assert fitted.save(empty) == empty.resolve()  # nothing there to lose
    assert fitted.save(photos, overwrite=True) == photos.resolve() and not (photos / "part.png").exists()
    assert (model_dir.stat().st_mode & 0o777) == 0o777 & ~_umask()  # not mkdtemp's 0700


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_an_unfitted_model_has_no_fitted_attributes_and_says_so_at_the_call():
    model = FunAD(**TINY)
    assert not hasattr(model, "threshold_") and getattr(model, "contamination_", None) is None
    with pytest.raises(RuntimeError, match="not fitted yet"):
        model.predict(["any.png"])  # at the call, not at the first prediction


def test_numpy_map_sizes_are_sizes(fitted, demo_data):
    (prediction,) = fitted.predict(demo_data.test_paths[:1], (np.int64(24), np.int32(32)))
    assert prediction.anomaly_map.shape == (24, 32)


@pytest.mark.parametrize("map_size", ["foo", (0, 0), 32, (-5, 10), (2.5, 3), (True, 3)])
def test_a_bad_map_size_is_refused_at_the_call(fitted, demo_data, map_size):
    with pytest.raises(ValueError, match="map_size must be 'original', 'input' or a \\(height, width\\)"):
        fitted.predict(demo_data.test_paths[:1], map_size)


def test_load_refuses_overrides_that_change_what_was_fitted(fitted, demo_data, tmp_path):
    model_dir = fitted.save(tmp_path / "model")
    for override in ({"scorer": "local_net"}, {"seed": 5}, {"epochs": 50}):
        with pytest.raises(ValueError, match=f"{next(iter(override))} would change what the model fitted"):
            FunAD.load(model_dir, **override)
    loaded = FunAD.load(model_dir, device="cpu", num_workers=0, progress=False)
    np.testing.assert_allclose(loaded.score(demo_data.test_paths[:2]), fitted.score(demo_data.test_paths[:2]))


def test_fit_and_score_name_what_is_not_a_file(fitted):
    model = FunAD(cache_dir=False, progress=False, **TINY)
    with pytest.raises(TypeError, match="ndarray is not the path of an image file or folder: fit reads files and "
                                        "folders only \\(save arrays"):
        model.fit([np.zeros((8, 8, 3), np.uint8)] * 8)
    with pytest.raises(ValueError, match="found 0 in an empty list"):
        model.fit([])
    with pytest.raises(TypeError, match="NoneType is not the path of an image file or folder"):
        fitted.score(None)


def test_float_pixels_above_one_are_read_as_white_with_a_warning(fitted, caplog):
    image = np.full((32, 32, 3), 200.0, np.float32)
    with caplog.at_level(logging.WARNING):
        fitted.score(image)
    assert "input 0: float pixels up to 200, where floats are read as 0..1" in caplog.text


def test_load_takes_the_weights_file_where_it_is_now_checked_by_its_content(demo_data, tmp_path):
    weights = tmp_path / "weights.pt"
    model = FunAD(cache_dir=False, progress=False, pretrained=False, **TINY)
    torch.save(model.backbone.model.state_dict(), weights)
    model = FunAD(cache_dir=False, progress=False, weights=str(weights), **TINY).fit(demo_data.train_dir)
    model_dir = model.save(tmp_path / "model")
    moved = tmp_path / "moved.pt"
    weights.rename(moved)
    loaded = FunAD.load(model_dir, weights=str(moved), progress=False)
    np.testing.assert_allclose(loaded.score(demo_data.test_paths[:2]), model.score(demo_data.test_paths[:2]))
    other = tmp_path / "other.pt"
    torch.save({name: value + 1 for name, value in model.backbone.model.state_dict().items()}, other)
    with pytest.raises(ValueError, match=f"{other} is not the weights file {model_dir} was fitted with"):
        FunAD.load(model_dir, weights=str(other))
