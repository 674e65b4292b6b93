"""Every registered scorer through the estimator: fit, predict, save, load, and the same scores after reloading."""

import numpy as np
import pytest
import torch

from funad import FunAD
from funad.inference.scorers.registry import list_scorers
from funad.persistence import FORMAT_VERSION, ModelFormatError

from conftest import TINY


@pytest.fixture(scope="module")
def features(demo_data):
    return FunAD(cache_dir=False, progress=False, pretrained=False, **TINY).extract(
        sorted(demo_data.train_dir.glob("*.png")))


@pytest.fixture(scope="module", params=list_scorers())
def fitted(request, features):
    return FunAD(cache_dir=False, progress=False, pretrained=False, scorer=request.param, **TINY).fit_features(
        features)


def test_the_papers_scorer_and_the_baselines_are_registered():
    assert {"local_net", "knn", "patchcore", "softpatch"} <= set(list_scorers())


def test_unknown_scorer_lists_the_registered_ones():
    with pytest.raises(ValueError, match="scorer must be one of .*local_net"):
        FunAD(scorer="nope")


def test_predict_save_load_gives_identical_scores_and_maps(fitted, demo_data, tmp_path):
    scores = fitted.score(demo_data.test_paths)
    maps = fitted.anomaly_maps(demo_data.test_paths)
    assert scores.shape == (len(demo_data.test_paths),) and np.isfinite(scores).all()
    loaded = FunAD.load(fitted.save(tmp_path / "model"))
    loaded.progress = False
    assert loaded.scorer_.name == fitted.config.scorer
    np.testing.assert_array_equal(loaded.score(demo_data.test_paths), scores)
    for reloaded, original in zip(loaded.anomaly_maps(demo_data.test_paths), maps):
        np.testing.assert_array_equal(reloaded, original)
    np.testing.assert_array_equal(loaded.train_predict_scores_, fitted.train_predict_scores_)
    assert (loaded.threshold_, loaded.contamination_, loaded.history_) == (
        fitted.threshold_, fitted.contamination_, fitted.history_)
    assert loaded.heatmap_range() == fitted.heatmap_range()


def test_training_scores_are_in_predict_units(fitted):
    scores = fitted.train_predict_scores_
    assert scores.shape == (len(fitted.train_paths_),) and np.isfinite(scores).all()
    assert fitted.contamination_ == pytest.approx(np.mean(scores > fitted.threshold_))
    low, high = fitted.heatmap_range()
    assert low <= scores.min() and scores.max() <= high


def test_local_net_scores_are_the_local_nets(features):
    model = FunAD(cache_dir=False, progress=False, pretrained=False, scorer="local_net", **TINY).fit_features(
        features)
    np.testing.assert_array_equal(model.train_predict_scores_, model.train_scores_)
    assert model.heatmap_range() == (0.0, 1.0)
    patches = torch.from_numpy(np.stack(features.patches[:2]).astype(np.float32))
    with torch.no_grad():
        expected = model.local_net_.score(patches)
    torch.testing.assert_close(model.scorer_.score_patches(patches), expected, rtol=0, atol=0)


def test_a_model_in_the_previous_format_is_refused_naming_both_versions(fitted, tmp_path):
    import json

    directory = fitted.save(tmp_path / "old")
    manifest = json.loads((directory / "model.json").read_text())
    manifest["format_version"] = FORMAT_VERSION - 1
    (directory / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFormatError, match=rf"model format version {FORMAT_VERSION - 1}, "
                                               rf".*format version {FORMAT_VERSION}"):
        FunAD.load(directory)


def test_blend_is_the_mean_of_its_parts_each_standardised_by_its_training_scores(features):
    from funad.inference.scorers.blend import BlendScorer

    model = FunAD(cache_dir=False, progress=False, pretrained=False, scorer="blend", **TINY).fit_features(features)
    blend = model.scorer_
    assert isinstance(blend, BlendScorer)
    method_features = features.method_features("patch")
    parts = [blend.knn, blend.local_net]
    trained = [part.score_training_images(method_features) for part in parts]
    for scores, centre, scale in zip(trained, blend.centres_, blend.scales_):
        assert centre == pytest.approx(np.median(scores))
        assert scale == pytest.approx(np.median(np.abs(scores - np.median(scores))))
    # Each part's standardised training scores have median 0, so the blend's lie around 0, some below.
    standardised = [(s - c) / d for s, c, d in zip(trained, blend.centres_, blend.scales_)]
    np.testing.assert_allclose(model.train_predict_scores_, np.mean(standardised, axis=0))
    assert model.train_predict_scores_.min() < 0 and model.heatmap_range()[0] == model.train_predict_scores_.min()
    patches = torch.from_numpy(np.stack(features.patches[:2]).astype(np.float32))
    maps, images = blend.score(patches)
    (knn_maps, knn_images), (net_maps, net_images) = (part.score(patches) for part in parts)
    (knn_centre, net_centre), (knn_scale, net_scale) = blend.centres_, blend.scales_
    torch.testing.assert_close(maps, ((knn_maps - knn_centre) / knn_scale + (net_maps - net_centre) / net_scale) / 2)
    torch.testing.assert_close(images, ((knn_images - knn_centre) / knn_scale
                                        + (net_images - net_centre) / net_scale) / 2)
    assert torch.equal(blend.score_patches(patches), maps)  # the maps' scores, without the image scores' pass


def test_onnx_export_refuses_a_scorer_it_cannot_carry_naming_it(features, tmp_path):
    from funad.export.onnx import export_onnx

    model = FunAD(cache_dir=False, progress=False, pretrained=False, scorer="blend", **TINY).fit_features(features)
    with pytest.raises(ValueError, match="supports the scorers knn, local_net, patchcore; this model uses 'blend'"):
        export_onnx(model, tmp_path / "model.onnx")


def test_a_patchcore_model_exports_as_the_knn_it_extends(features, demo_data, tmp_path):
    from PIL import Image

    from funad.export.onnx import export_onnx
    from funad.runtime import OnnxModel

    model = FunAD(cache_dir=False, progress=False, pretrained=False, scorer="patchcore", **TINY).fit_features(
        features)
    graph = OnnxModel(export_onnx(model, tmp_path / "model.onnx"))
    images = demo_data.test_paths[:3]
    scores = graph.run([Image.open(path).convert("RGB") for path in images]).scores
    np.testing.assert_allclose(scores, model.score(images), rtol=1e-4)


def test_a_blend_fit_scores_the_training_images_once_per_part(features, monkeypatch):
    from funad.inference.scorers.knn import NearestNeighbourScorer

    calls = []
    original = NearestNeighbourScorer.score_training_images
    monkeypatch.setattr(NearestNeighbourScorer, "score_training_images",
                        lambda self, found: calls.append(found) or original(self, found))
    model = FunAD(cache_dir=False, progress=False, pretrained=False, scorer="blend", **TINY).fit_features(features)
    assert len(calls) == 1  # standardising and the threshold share the knn's leave-own-image-out pass
    # Other features are scored afresh.
    model.scorer_.score_training_images(features.subset(features.paths[:4]).method_features("patch"))
    assert len(calls) == 2
