"""Object alignment (``align``): an elongated object's pose, the photo turned to its canonical pose, maps turned
back onto the photo, the label-free ``auto`` rule, and the same turn in funad, a reloaded model and the ONNX runtime."""

import math
import shutil

import numpy as np
import pytest
from PIL import Image, ImageDraw

from funad import FunAD
from funad.runtime import OnnxModel
from funad.utils.pose import aligned_photo, estimate_pose, map_to_photo, objects_elongated

from conftest import TINY, fit_save_and_export


def screw_photo(degrees: float, centre=(60.0, 50.0), size=(120, 100), seed=0, spot: bool = False) -> Image.Image:
    """A dark bar with a heavy round head at one end, turned ``degrees`` clockwise on screen, on a noisy light
    background; ``spot``: a bright defect near its light end."""
    rng = np.random.default_rng(seed)
    background = rng.integers(185, 215, (size[1], size[0], 3), dtype=np.uint8)
    photo = Image.fromarray(background)
    draw = ImageDraw.Draw(photo)
    ux, uy = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    head = (centre[0] - 35 * ux, centre[1] - 35 * uy)
    tip = (centre[0] + 35 * ux, centre[1] + 35 * uy)
    draw.line([head, tip], fill=(70, 70, 70), width=7)
    draw.ellipse([head[0] - 10, head[1] - 10, head[0] + 10, head[1] + 10], fill=(70, 70, 70))
    if spot:
        x, y = centre[0] + 22 * ux, centre[1] + 22 * uy
        draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=(250, 250, 250))
    return photo


def angle_between(a: float, b: float) -> float:
    return abs((a - b + 180) % 360 - 180)


@pytest.mark.parametrize("degrees", [0, 30, 100, 200, 300])
def test_the_pose_is_the_axis_from_the_heavy_end_and_the_objects_centre(degrees):
    pose = estimate_pose(screw_photo(degrees))
    assert pose is not None
    assert angle_between(pose.angle, degrees) < 3
    axis = np.array([math.cos(math.radians(degrees)), math.sin(math.radians(degrees))])
    offset = np.array(pose.centre) - (60.0, 50.0)
    assert abs(offset @ (-axis[1], axis[0])) < 2  # on the axis,
    assert -20 < offset @ axis < 0  # pulled towards the heavy head
    assert pose.elongation > 4 and pose.border_share == 0


def test_an_aligned_photo_shows_the_object_along_the_horizontal_axis_at_the_centre():
    photo = screw_photo(130, centre=(45.0, 60.0))
    aligned = aligned_photo(photo, estimate_pose(photo))
    assert aligned.size == photo.size
    pose = estimate_pose(aligned)
    assert angle_between(pose.angle, 0) < 3
    assert np.allclose(pose.centre, (60, 50), atol=2)
    assert aligned_photo(photo, None) is photo


@pytest.mark.parametrize("map_size", [(100, 120), (50, 60), (64, 64)])
def test_a_map_drawn_on_the_aligned_photo_is_turned_back_onto_the_photo(map_size):
    """A spot on the photo, found on the aligned photo's map, lies at the spot again once turned back, whatever
    the map's size (the photo's, half of it, or the square input's)."""
    photo = screw_photo(250, centre=(50.0, 55.0), spot=True)
    pose = estimate_pose(photo)
    spot_x, spot_y = 50 + 22 * math.cos(math.radians(250)), 55 + 22 * math.sin(math.radians(250))
    marked = np.zeros((100, 120), dtype=np.float32)
    marked[round(spot_y) - 3:round(spot_y) + 4, round(spot_x) - 3:round(spot_x) + 4] = 1.0
    on_aligned = np.asarray(aligned_photo(Image.fromarray(marked), pose).resize(map_size[::-1]), dtype=np.float32)
    back = map_to_photo(on_aligned, pose, photo.size)
    assert back.shape == map_size
    row, column = np.unravel_index(back.argmax(), back.shape)
    assert abs(row * 100 / map_size[0] - spot_y) < 4 and abs(column * 120 / map_size[1] - spot_x) < 4
    assert back.min() == on_aligned.min()  # the corners the aligned photo left out: its lowest value
    np.testing.assert_array_equal(map_to_photo(on_aligned, None, photo.size), on_aligned)


def test_auto_aligns_only_one_elongated_object_clear_of_the_border():
    screws = [estimate_pose(screw_photo(degrees, seed=degrees)) for degrees in range(0, 360, 40)]
    assert objects_elongated(screws)
    discs = []
    for seed in range(5):
        disc = screw_photo(0, seed=seed)
        ImageDraw.Draw(disc).ellipse([20, 10, 100, 90], fill=(70, 70, 70))
        discs.append(estimate_pose(disc))
    assert not objects_elongated(discs)  # round: no axis
    rng = np.random.default_rng(0)
    textures = [estimate_pose(Image.fromarray(rng.integers(0, 256, (80, 100, 3), dtype=np.uint8)))
                for _ in range(5)]
    assert not objects_elongated(textures)  # what stands out covers the border
    blank = Image.new("RGB", (40, 30), (128, 128, 128))
    assert estimate_pose(blank) is None and not objects_elongated([None, None]) and not objects_elongated([])


@pytest.fixture(scope="module")
def screws(tmp_path_factory):
    """Training photos of the screw at random angles and places, and a test photo with a spot."""
    folder = tmp_path_factory.mktemp("screws")
    rng = np.random.default_rng(0)
    (folder / "train").mkdir()
    for index in range(12):
        screw_photo(rng.uniform(0, 360), centre=tuple(rng.uniform(45, 65, 2)), seed=index).save(
            folder / "train" / f"{index:02d}.png")
    screw_photo(75, centre=(55.0, 52.0), seed=99, spot=True).save(folder / "spot.png")
    return folder


@pytest.fixture(scope="module")
def aligning(screws, tmp_path_factory):
    model, folder = fit_save_and_export(screws / "train", tmp_path_factory.mktemp("aligning"))
    return model, folder


def test_fit_chooses_alignment_from_its_photos_and_saves_the_choice(aligning, demo_data):
    model, folder = aligning
    assert model.config.align == "auto" and model.align_object_ and model.backbone.preprocessing.align_object
    loaded = FunAD.load(folder / "model")
    assert loaded.config.align == "object" and loaded.backbone.preprocessing.align_object
    textures = FunAD(pretrained=False, progress=False, **TINY)
    textures.choose_preprocessing(sorted(demo_data.train_dir.glob("*.png")))
    assert not textures.align_object_ and textures.resolved_preprocessing()["align"] == "none"
    unturned = FunAD(pretrained=False, progress=False, **TINY, align="none")
    assert unturned.backbone.describe() != model.backbone.describe()  # features cached apart


def test_a_photo_scores_as_its_aligned_copy_and_maps_as_that_copys_map_turned_back(aligning, screws, tmp_path):
    model, _ = aligning
    photo = Image.open(screws / "spot.png").convert("RGB")
    pose = estimate_pose(photo)
    aligned_photo(photo, pose).save(tmp_path / "aligned.png")
    unturned = FunAD(pretrained=False, progress=False, **TINY, align="none")
    unturned.fitted_ = model.fitted_
    expected = next(unturned.predict(tmp_path / "aligned.png"))
    found = next(model.predict(screws / "spot.png"))
    assert found.score == pytest.approx(expected.score, rel=1e-6)
    assert found.anomaly_map.shape == (100, 120)
    np.testing.assert_allclose(found.anomaly_map, map_to_photo(expected.anomaly_map, pose, photo.size), rtol=1e-6)


def test_the_exported_graph_and_a_reloaded_model_align_alike(aligning, screws):
    model, folder = aligning
    expected = next(model.predict(screws / "spot.png"))
    runtime = OnnxModel(folder / "model.onnx")
    assert runtime.preprocessing.align_object
    exported = next(runtime.predict([screws / "spot.png"]))
    assert exported.score == pytest.approx(expected.score, rel=1e-4)
    np.testing.assert_allclose(exported.anomaly_map, expected.anomaly_map, atol=1e-3)
    reloaded = next(FunAD.load(folder / "model").predict(screws / "spot.png"))
    assert reloaded.score == expected.score
    np.testing.assert_array_equal(reloaded.anomaly_map, expected.anomaly_map)


def test_the_benchmark_scores_turned_photos_pixels_on_the_maps_predict_draws(aligning, screws, tmp_path, monkeypatch):
    """The benchmark's pixel metrics read the maps turned back onto each photo, as ``predict`` gives them."""
    from funad.benchmark import runner
    from funad.benchmark.datasets import load_dataset
    from funad.benchmark.protocol import make_split
    from funad.metrics import PixelMetrics

    model, _ = aligning
    root = tmp_path / "screws"
    shutil.copytree(screws / "train", root / "train" / "good")
    (root / "test" / "good").mkdir(parents=True)
    for index, degrees in enumerate((20, 140)):
        screw_photo(degrees, seed=50 + index).save(root / "test" / "good" / f"{index}.png")
    (root / "test" / "spot").mkdir()
    (root / "ground_truth" / "spot").mkdir(parents=True)
    for index, degrees in enumerate((75, 250)):
        photo = screw_photo(degrees, seed=60 + index, spot=True)
        photo.save(root / "test" / "spot" / f"{index}.png")
        x, y = 60 + 22 * math.cos(math.radians(degrees)), 50 + 22 * math.sin(math.radians(degrees))  # the spot
        mask = Image.new("L", photo.size, 0)
        ImageDraw.Draw(mask).ellipse([x - 4, y - 4, x + 4, y + 4], fill=255)
        mask.save(root / "ground_truth" / "spot" / f"{index}_mask.png")
    split = make_split(load_dataset(root), 0.0, 0)
    tested = split.test_set("overlap")
    features = model.extract([sample.path for sample in tested])
    scored_maps = []

    class Recording(PixelMetrics):
        def update(self, anomaly_map, mask):
            scored_maps.append(anomaly_map)
            super().update(anomaly_map, mask)

    monkeypatch.setattr(runner, "PixelMetrics", Recording)
    runner.Evaluator(split, ("overlap",), features, model, pixels=True).evaluate(model.scorer_)
    predicted = [prediction.anomaly_map for prediction in model.predict([sample.path for sample in tested])]
    assert len(scored_maps) == len(predicted) == 4
    for scored, expected in zip(scored_maps, predicted):  # the benchmark reads fp16 cached features: 1e-3 apart
        np.testing.assert_allclose(scored, expected, rtol=2e-3)


def test_an_export_turned_by_another_pose_estimate_is_refused(aligning):
    from funad.export.metadata import preprocessing_from_metadata, preprocessing_metadata
    from funad.utils.pose import POSE_VERSION

    model, folder = aligning
    metadata = preprocessing_metadata(OnnxModel(folder / "model.onnx").preprocessing)
    assert metadata["pose_version"] == str(POSE_VERSION)
    assert preprocessing_from_metadata(metadata, "model.onnx").align_object
    with pytest.raises(ValueError, match=rf"model.onnx: exported with version {POSE_VERSION + 1} of the pose"):
        preprocessing_from_metadata({**metadata, "pose_version": str(POSE_VERSION + 1)}, "model.onnx")
    older = {key: value for key, value in metadata.items() if key != "pose_version"}  # turned by version 1
    assert preprocessing_from_metadata(older, "model.onnx").align_object
