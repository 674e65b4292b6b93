"""`funad export --format onnx`, `python -m funad.runtime` and `funad predict model.onnx`: one graph that
scores and maps as funad does."""

import logging
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from funad import __version__
from funad.cli import main
from funad.data.images import load_image
from funad.export.onnx import Head, LocalNetScore, composed_with_onnx_backbone
from funad.features.backbones import create_backbone
from funad.features.extraction import preprocess
from funad.inference.scorers.local_net import LocalNetScorer
from funad.method.local_net import LocalNet
from funad.runtime import OnnxModel
from funad.runtime.__main__ import main as runtime_main
from funad.utils.resize import resize_bilinear

from conftest import fit_save_and_export

SCORE_TOLERANCE = 1e-4  # relative
MAP_TOLERANCE = 1e-3  # absolute


@pytest.fixture(scope="module", params=["knn", "local_net"])
def exported(request, demo_data, tmp_path_factory):
    """A tiny fitted model (knn: corroborated, the default) saved, and exported with the command line."""
    return fit_save_and_export(demo_data.train_dir, tmp_path_factory.mktemp(request.param), scorer=request.param)


def test_exported_graph_scores_maps_and_labels_as_the_model(exported, demo_data):
    model, folder = exported
    runtime = OnnxModel(folder / "model.onnx")
    result = runtime.run([load_image(path) for path in demo_data.test_paths])
    predictions = list(model.predict(demo_data.test_paths, map_size="input"))
    scores = np.array([p.score for p in predictions])
    maps = np.stack([p.anomaly_map for p in predictions])
    score_error = np.max(np.abs(result.scores - scores) / np.abs(scores))
    map_error = np.max(np.abs(result.maps - maps))
    print(f"{model.config.scorer}: max relative score difference {score_error:.2g}, max map difference "
          f"{map_error:.2g}")
    assert score_error < SCORE_TOLERANCE and map_error < MAP_TOLERANCE
    assert result.maps.shape == (len(scores), 64, 64)
    assert np.array_equal(result.labels, model.label(scores))
    assert runtime.threshold_ == model.threshold_ and runtime.pixel_threshold_ == model.pixel_threshold_
    assert runtime.heatmap_range() == pytest.approx(model.heatmap_range())


def test_metadata_carries_calibration_and_preprocessing(exported):
    model, folder = exported
    metadata = {entry.key: entry.value for entry in onnx.load(str(folder / "model.onnx")).metadata_props}
    threshold_keys = [key for key in metadata if "threshold" in key]
    assert threshold_keys and float(metadata[threshold_keys[0]]) == model.threshold_
    assert metadata["image_size"] == "64" and metadata["funad_version"] == __version__
    assert metadata["scorer"] == model.config.scorer
    assert "mean" in metadata and "std" in metadata
    assert metadata["keep_aspect"] == "false"  # the demo's photos are square: "auto" stretches


def test_runtime_without_torch_writes_what_predict_writes(exported, demo_data, tmp_path, read_csv):
    model, folder = exported
    images = [str(path) for path in demo_data.test_paths[:3]]
    assert main(["--quiet", "predict", str(folder / "model"), *images, "--out", str(tmp_path / "predict"),
                 "--no-heatmaps"]) == 0
    # torch, matplotlib and scipy blocked: importing one would raise, so the runtime provably runs without them
    script = ("import sys; sys.modules['torch'] = sys.modules['matplotlib'] = sys.modules['scipy'] = None; "
              "from funad.runtime.__main__ import main; "
              "sys.exit(main(sys.argv[1:]))")
    command = [sys.executable, "-c", script, str(folder / "model.onnx"), *images, "--out", str(tmp_path / "runtime")]
    subprocess.run(command, check=True)
    again = subprocess.run(command, capture_output=True, text=True)  # the first run's results are kept
    assert again.returncode == 1 and "holds an earlier prediction" in again.stderr
    assert "--resume" not in again.stderr  # predict's option, which the runtime has not
    subprocess.run([*command, "--overwrite"], check=True)
    expected, written = read_csv(tmp_path / "predict" / "scores.csv"), read_csv(tmp_path / "runtime" / "scores.csv")
    assert len(written) == len(expected) == 3
    assert not (tmp_path / "runtime" / "regions.csv").exists()  # it finds no regions (scipy): no file that says none
    for mine, theirs in zip(written, expected):
        assert float(mine.pop("score")) == pytest.approx(float(theirs.pop("score")), rel=SCORE_TOLERANCE)
        assert mine == theirs
        own_map, their_map = np.load(tmp_path / "runtime" / mine["map"]), np.load(tmp_path / "predict" / theirs["map"])
        assert own_map.shape == their_map.shape and np.max(np.abs(own_map - their_map)) < MAP_TOLERANCE


def test_predict_of_the_exported_model_writes_what_the_model_directory_writes(exported, demo_data, tmp_path,
                                                                              read_csv):
    """Every output of `funad predict`, heatmaps and regions included, from the ONNX file, torch never imported."""
    model, folder = exported
    images = [str(path) for path in demo_data.test_paths] + [str(tmp_path / "missing.png")]
    (tmp_path / "missing.png").write_bytes(b"not an image")
    every_image_anomalous = ["--threshold", "0"]  # so that every image has its regions outlined
    assert main(["--quiet", "predict", str(folder / "model"), *images, "--out", str(tmp_path / "directory"),
                 *every_image_anomalous]) == 0
    script = ("import sys; sys.modules['torch'] = None; from funad.cli import main; "
              "sys.exit(main(sys.argv[1:]))")
    subprocess.run([sys.executable, "-c", script, "--quiet", "predict", str(folder / "model.onnx"), *images,
                    "--out", str(tmp_path / "onnx"), *every_image_anomalous], check=True)
    expected, written = read_csv(tmp_path / "directory" / "scores.csv"), read_csv(tmp_path / "onnx" / "scores.csv")
    assert [row["label"] for row in written] == [row["label"] for row in expected]
    assert set(row["label"] for row in written[:-1]) == {"anomalous"} and written[-1]["error"]
    for mine, theirs in zip(written[:-1], expected[:-1]):
        assert float(mine.pop("score")) == pytest.approx(float(theirs.pop("score")), rel=SCORE_TOLERANCE)
        assert mine == theirs
        assert (tmp_path / "onnx" / mine["heatmap"]).is_file()
    own_regions = read_csv(tmp_path / "onnx" / "regions.csv")
    their_regions = read_csv(tmp_path / "directory" / "regions.csv")
    assert own_regions and [row["path"] for row in own_regions] == [row["path"] for row in their_regions]


def test_predict_refuses_an_exported_model_on_another_device(exported, demo_data, tmp_path):
    _, folder = exported
    assert main(["--quiet", "predict", str(folder / "model.onnx"), str(demo_data.test_paths[0]), "--out",
                 str(tmp_path / "out"), "--device", "cuda"]) != 0


def test_bilinear_resize_is_torchs():
    grid = np.random.default_rng(0).random((8, 8), dtype=np.float32)
    for height, width in ((37, 90), (5, 3), (8, 8)):
        expected = torch.nn.functional.interpolate(torch.from_numpy(grid)[None, None], size=(height, width),
                                                   mode="bilinear", align_corners=False)[0, 0].numpy()
        assert np.allclose(resize_bilinear(grid, height, width), expected, atol=1e-6)


def test_default_onnx_dinov2_backbone_composes_with_the_head(demo_data, tmp_path):
    """The default backbone's truncated graph, then the head: as the torch backbone and head (2 images)."""

    backbone = create_backbone("imgfocus_dinov2_vits14", weights=None, pretrained=True, image_size=None)
    torch.manual_seed(0)
    head = Head(LocalNetScore(LocalNetScorer(LocalNet(backbone.patch_dim).eval())), backbone.grid,
                backbone.preprocessing.image_size, 4.0, 0.5).eval()
    graph = composed_with_onnx_backbone(backbone, head)
    path = tmp_path / "dinov2.onnx"
    onnx.save(graph, str(path))
    images = torch.stack([preprocess(load_image(p), backbone.preprocessing)[0] for p in demo_data.test_paths[:2]])
    with torch.no_grad():
        scores, maps, _ = head(backbone(images).patches)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_scores, onnx_maps, _ = session.run(None, {"image": images.numpy()})
    print(f"dinov2: max relative score difference {np.max(np.abs(onnx_scores - scores.numpy()) / scores.numpy()):.2g}, "
          f"max map difference {np.max(np.abs(onnx_maps - maps.numpy())):.2g}")
    assert np.allclose(onnx_scores, scores.numpy(), rtol=SCORE_TOLERANCE)
    assert np.max(np.abs(onnx_maps - maps.numpy())) < MAP_TOLERANCE


def test_exporting_an_unfitted_model_says_so(tmp_path):
    from funad.export.onnx import export_onnx
    from funad.model import FunAD

    from conftest import TINY

    with pytest.raises(RuntimeError, match="not fitted yet"):
        export_onnx(FunAD(pretrained=False, progress=False, **TINY), tmp_path / "model.onnx")


def test_runtime_fails_when_no_image_could_be_read_as_predict_does(exported, tmp_path, caplog):
    _, folder = exported
    unreadable = tmp_path / "unreadable.png"
    unreadable.write_bytes(b"not an image")
    with caplog.at_level(logging.ERROR):
        assert runtime_main([str(folder / "model.onnx"), str(unreadable), "--out", str(tmp_path / "out")]) == 1
    assert "none of the 1 input images could be read" in caplog.text


def test_edited_metadata_is_named_with_the_file(exported, tmp_path):
    _, folder = exported
    graph = onnx.load(str(folder / "model.onnx"))
    for entry in graph.metadata_props:
        if entry.key == "threshold":
            entry.value = "abc"
    edited = tmp_path / "edited.onnx"
    onnx.save(graph, str(edited))
    with pytest.raises(ValueError, match=f"{edited}: unreadable funad metadata"):
        OnnxModel(edited)
