"""``precision="int8"``: the quantized ONNX graph, its cache, its features and the saved model."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from funad import FunAD
from funad.data.preprocessing import normalised_array
from funad.features.backbones import create_backbone

from conftest import benchmark_script

SIZE = 112  # an 8x8 grid: a quarter of the default's work


@pytest.fixture(scope="module")
def graph_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("cache")
        patch.setenv("FUNAD_CACHE_DIR", str(folder))
        yield folder


@pytest.fixture(scope="module")
def backbones(graph_cache):
    return {precision: create_backbone("imgfocus_dinov2_vits14", image_size=SIZE, precision=precision)
            for precision in ("fp32", "int8")}


@pytest.fixture(scope="module")
def images(demo_data, backbones):
    pre = backbones["fp32"].preprocessing
    return torch.stack([torch.from_numpy(normalised_array(Image.open(path).convert("RGB"), pre.image_size, pre.mean,
                                                          pre.std)) for path in demo_data.test_paths])


def test_int8_features_stay_close_to_fp32(backbones, images):
    with torch.inference_mode():
        full, quantized = (backbones[precision](images).patches.flatten(0, 1) for precision in ("fp32", "int8"))
    assert not torch.equal(full, quantized)  # the quantized graph runs
    cosine = torch.nn.functional.cosine_similarity(full, quantized, dim=1)
    correlation = np.corrcoef(full.numpy().ravel(), quantized.numpy().ravel())[0, 1]
    assert cosine.median() > 0.99 and cosine.min() > 0.95
    assert correlation > 0.99


def test_int8_graph_is_made_once_and_cached(backbones, graph_cache, monkeypatch):
    cached = list((graph_cache / "graphs").glob("*.int8.onnx"))
    assert len(cached) == 1
    import onnxruntime.quantization

    def refuse(*args, **kwargs):
        raise AssertionError("quantized again")

    monkeypatch.setattr(onnxruntime.quantization, "quantize_dynamic", refuse)
    again = create_backbone("imgfocus_dinov2_vits14", image_size=SIZE, precision="int8")
    assert again.truncated_model_bytes == backbones["int8"].truncated_model_bytes == cached[0].read_bytes()
    assert not [path for path in (graph_cache / "graphs").iterdir() if path.name.startswith(".")]  # no temporary file


def test_precision_is_part_of_the_description_and_the_feature_cache_key(backbones, graph_cache):
    full, quantized = backbones["fp32"].describe(), backbones["int8"].describe()
    assert "precision" not in full  # fp32 descriptions are those written before the setting existed
    assert quantized["precision"] == "int8" and quantized["quantization"]
    folders = {precision: FunAD(backbone="imgfocus_dinov2_vits14", image_size=SIZE, precision=precision,
                                cache_dir=graph_cache).feature_cache_folder() for precision in ("fp32", "int8")}
    assert folders["fp32"] != folders["int8"]


def test_int8_is_recorded_in_the_saved_model(demo_data, graph_cache, tmp_path):
    settings = dict(backbone="imgfocus_dinov2_vits14", image_size=SIZE, precision="int8", epochs=2, batch_size=8,
                    patches_per_image=16, num_workers=0, batch_size_extract=8)
    model = FunAD(cache_dir=graph_cache / "features", progress=False, **settings).fit(demo_data.train_dir)
    model.save(tmp_path / "model")
    loaded = FunAD.load(tmp_path / "model")
    assert loaded.config.precision == "int8" and loaded.backbone.precision == "int8"
    np.testing.assert_allclose(loaded.score(demo_data.test_paths), model.score(demo_data.test_paths), rtol=1e-5)


def test_unavailable_precisions_are_refused():
    with pytest.raises(ValueError, match="bf16"):
        create_backbone("efficientnet_lite0", pretrained=False, image_size=64, precision="bf16")
    with pytest.raises(ValueError, match="not implemented for backbone 'efficientnet_lite0'"):
        create_backbone("efficientnet_lite0", pretrained=False, image_size=64, precision="int8")
    with pytest.raises(ValueError, match="precision must be one of"):
        FunAD(precision="fp16")


def test_precision_benchmark_prints_both_precisions(demo_data, graph_cache, capsys):
    script = benchmark_script("precision")
    script.main([str(demo_data.test_dir), "--image-size", str(SIZE), "--batch", "4", "--repeats", "1", "--limit", "4"])
    output = capsys.readouterr().out
    assert "images=4 " in output
    assert {"fp32", "int8"} == set(re.findall(r"precision=(\w+) images_per_s=\d", output))
    cosine = float(re.search(r"cosine_median=([\d.]+)", output).group(1))
    assert 0.99 < cosine < 1.0
