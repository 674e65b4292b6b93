"""What `funad predict` writes: defect regions, map formats and sizes, heatmaps; the report's cap."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from funad.cli import main
from funad.data.images import load_image
from funad.inference.regions import find_regions, outline
from funad.model import FunAD
from funad.reports.heatmaps import heatmap_picture
from funad.reports.html import render_report
from funad.reports.prediction_folder import read_prediction_folder

from conftest import TINY


@pytest.fixture(scope="module")
def model_dir(demo_data, tmp_path_factory):
    directory = tmp_path_factory.mktemp("outputs") / "model"
    FunAD(cache_dir=False, progress=False, pretrained=False, **TINY).fit(demo_data.train_dir).save(directory)
    return directory


def test_regions_are_the_connected_parts_of_the_mask():
    anomaly_map = np.zeros((20, 30), np.float32)
    anomaly_map[2:5, 3:9] = 2.0  # 3 x 6 block
    anomaly_map[10, 20] = 5.0  # one pixel ...
    anomaly_map[11, 21] = 4.0  # ... and its diagonal neighbour: one region
    regions = find_regions(anomaly_map, anomaly_map > 1.0)
    assert [(r.x, r.y, r.width, r.height, r.area, r.peak) for r in regions] == [(3, 2, 6, 3, 18, 2.0),
                                                                              (20, 10, 2, 2, 2, 5.0)]
    assert find_regions(anomaly_map, anomaly_map > 9) == []
    edge = outline(anomaly_map > 1.0)
    assert edge[2, 3] and not edge[3, 5] and edge.sum() == 14 + 2


def test_heatmap_palette_is_matplotlibs_jet():
    from matplotlib import colormaps

    from funad.reports.heatmaps import jet_palette

    expected = (colormaps["jet"](np.arange(256) / 255.0)[:, :3] * 255).astype(np.uint8)
    assert np.frombuffer(jet_palette(), np.uint8).reshape(256, 3).tolist() == expected.tolist()


def test_pixel_threshold_is_saved_and_read_from_normal_training_images(model_dir):
    model = FunAD.load(model_dir)
    assert np.isfinite(model.pixel_threshold_) and 0 < model.pixel_threshold_ <= model.train_predict_scores_.max()


def test_regions_csv_and_outlined_heatmaps(model_dir, demo_data, tmp_path, read_csv):
    out, jpeg = tmp_path / "pred", tmp_path / "jpeg"
    # every image labelled anomalous, so each gets its regions
    every_image_anomalous = ["--threshold", "-1"]
    assert main(["--quiet", "predict", str(model_dir), str(demo_data.test_dir), "--out", str(out),
                 "--heatmap-format", "png", *every_image_anomalous]) == 0
    assert main(["--quiet", "predict", str(model_dir), str(demo_data.test_dir), "--out", str(jpeg),
                 *every_image_anomalous]) == 0
    model = FunAD.load(model_dir)
    rows, regions = read_csv(out / "scores.csv"), read_csv(out / "regions.csv")
    # The heatmaps are drawn on the images predict decoded: the same picture as drawn on the file read again.
    for row, jpeg_row in zip(rows, read_csv(jpeg / "scores.csv")):
        anomaly_map = np.load(out / row["map"])
        mask, _ = model.defect_regions(anomaly_map)
        expected = np.asarray(heatmap_picture(load_image(row["path"]), anomaly_map, model.heatmap_range(), mask))
        assert np.array_equal(np.asarray(Image.open(out / row["heatmap"])), expected)
        with Image.open(jpeg / jpeg_row["heatmap"]) as picture:  # the default: JPEG, close to the lossless one
            assert jpeg_row["heatmap"].endswith(".png.jpg") and picture.format == "JPEG"
            assert np.abs(np.asarray(picture, np.float32) - expected).mean() < 4
    assert list(regions[0]) == ["path", "region", "x", "y", "width", "height", "area", "peak"]
    for row in rows:
        anomaly_map = np.load(out / row["map"])
        mask = anomaly_map > model.pixel_threshold_
        own = [r for r in regions if r["path"] == row["path"]]
        assert sum(int(r["area"]) for r in own) == mask.sum()
        for region in own:
            x, y, width, height = (int(region[k]) for k in ("x", "y", "width", "height"))
            assert 0 <= x < x + width <= anomaly_map.shape[1] and 0 <= y < y + height <= anomaly_map.shape[0]
            assert float(region["peak"]) == pytest.approx(anomaly_map[y:y + height, x:x + width].max(), rel=1e-5)
        # the outline is the only pure white in a heatmap ('jet' has no white)
        heatmap = np.asarray(Image.open(out / row["heatmap"]))
        assert ((heatmap == 255).all(axis=2).any()) == bool(own)
    assert regions, "no test image had a defect region"


def test_map_formats_sizes_and_no_heatmaps(model_dir, demo_data, tmp_path, read_csv):
    image = demo_data.test_paths[-1]
    npy, png, small, bare = (tmp_path / name for name in ("npy", "png", "small", "bare"))
    assert main(["--quiet", "predict", str(model_dir), str(image), "--out", str(npy)]) == 0
    assert main(["--quiet", "predict", str(model_dir), str(image), "--out", str(png), "--maps", "png"]) == 0
    assert main(["--quiet", "predict", str(model_dir), str(image), "--out", str(small), "--map-size", "20x10"]) == 0
    assert main(["--quiet", "predict", str(model_dir), str(image), "--out", str(bare), "--maps", "none",
                 "--no-heatmaps", "--map-size", "input"]) == 0

    folder = read_prediction_folder(png)
    (png_row,) = read_csv(png / "scores.csv")
    assert png_row["map"].endswith(".png.png") and Image.open(png / png_row["map"]).mode.startswith("I")
    low, high = folder.map_range
    exact = np.load(npy / read_csv(npy / "scores.csv")[0]["map"])
    np.testing.assert_allclose(folder.read_map(png / png_row["map"]), np.clip(exact, low, high),
                               atol=(high - low) / 65535)

    (small_row,) = read_csv(small / "scores.csv")
    assert np.load(small / small_row["map"]).shape == (10, 20)
    assert Image.open(small / small_row["heatmap"]).size == (20, 10)

    (bare_row,) = read_csv(bare / "scores.csv")
    assert bare_row["map"] == bare_row["heatmap"] == "" and float(bare_row["score"]) > 0
    assert not (bare / "maps").exists() and not (bare / "heatmaps").exists()
    assert main(["--quiet", "report", str(bare)]) == 0  # a report without maps or heatmaps


def test_bad_map_size_is_a_usage_error(model_dir, demo_data, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(model_dir), str(demo_data.test_dir), "--out", str(tmp_path), "--map-size", "big"])
    assert exit_info.value.code == 2 and "WIDTHxHEIGHT" in capsys.readouterr().err


def test_report_caps_its_table_with_the_most_anomalous_first(model_dir, demo_data, tmp_path):
    out = tmp_path / "pred"
    assert main(["--quiet", "predict", str(model_dir), str(demo_data.test_dir), "--out", str(out)]) == 0
    folder = read_prediction_folder(out)
    page = render_report(folder, None, max_images=3)
    images = list(folder.images())
    top = sorted(images, key=lambda image: -image.score)[:3]
    assert page.count('<td class="path">') - page.split("Suspected training images")[1].count(
        '<td class="path">') == 3
    positions = [page.index(str(image.path)) for image in top]
    assert positions == sorted(positions) and f"the 3 highest of {len(images)}" in page


def test_audit_heatmaps_outline_the_suspects_regions_as_predict_does(model_dir, tmp_path, read_csv):
    audit = tmp_path / "audit"
    # threshold -1: every training image is a suspect, so each has its heatmap
    assert main(["--quiet", "audit", str(model_dir), "--out", str(audit), "--threshold", "-1",
                 "--heatmap-format", "png"]) == 0
    model = FunAD.load(model_dir)
    outlined = 0
    for row in read_csv(audit / "audit.csv"):
        (prediction,) = model.predict([row["path"]])
        mask, _ = model.defect_regions(prediction.anomaly_map)
        expected = heatmap_picture(load_image(row["path"]), prediction.anomaly_map, model.heatmap_range(), mask)
        heatmap = np.asarray(Image.open(next((audit / "heatmaps").rglob(Path(row["path"]).name + ".png"))))
        assert np.array_equal(heatmap, np.asarray(expected))
        outlined += mask.any()
    assert outlined, "no training image had a defect region"
