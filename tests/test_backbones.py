"""Every backbone behind one interface; hub-only backbones tested with random weights."""

import pytest
import torch
from safetensors.torch import save_file

from funad.features.backbones import create_backbone, list_backbones

# Small input sizes keep the big architectures fast with random weights.
CASES = {
    "efficientnet_lite0": (64, (8, 8), 152, 1280),
    "wide_resnet50_2": (64, (8, 8), 1536, 2048),
    "dino_vitb8": (64, (8, 8), 1536, 768),  # the paper's: CLS (+) patch token
    "dinov2_vits14": (56, (4, 4), 768, 384),
    "dinov2_vitb14": (56, (4, 4), 1536, 768),
    "imgfocus_dinov2_vits14": (56, (4, 4), 384, 384),  # fixed ONNX weights (offline), run at 56 px
}
# Backbones without a random-weight variant; their weights ship in a package.
FIXED_WEIGHTS = {"imgfocus_dinov2_vits14"}


def test_every_registered_backbone_has_a_case():
    assert set(CASES) == set(list_backbones())


@pytest.mark.parametrize("name", sorted(CASES))
def test_backbone_shapes_with_random_weights(name):
    size, grid, patch_dim, global_dim = CASES[name]
    backbone = create_backbone(name, pretrained=name in FIXED_WEIGHTS, image_size=size)
    assert (backbone.grid, backbone.patch_dim, backbone.global_dim) == (grid, patch_dim, global_dim)
    features = backbone(torch.randn(2, 3, size, size))
    assert features.patches.shape == (2, grid[0] * grid[1], patch_dim)
    assert features.global_.shape == (2, global_dim)
    assert not any(p.requires_grad for p in backbone.parameters())


def test_vit_patch_feature_is_cls_concatenated_with_patch_token():
    backbone = create_backbone("dino_vitb8", pretrained=False, image_size=32)
    features = backbone(torch.randn(1, 3, 32, 32))
    cls = features.global_[0]
    assert torch.equal(features.patches[0, :, :768], cls.expand(16, 768))


def test_weights_file_is_loaded(tmp_path):
    source = create_backbone("dino_vitb8", pretrained=False, image_size=32)
    state = {k: v.clone() for k, v in source.model.state_dict().items()}
    state["cls_token"] = torch.full_like(state["cls_token"], 0.5)
    weights = tmp_path / "dino.safetensors"
    save_file(state, str(weights))
    loaded = create_backbone("dino_vitb8", weights=weights, image_size=32)
    assert torch.equal(loaded.model.cls_token, state["cls_token"])
    torch.save(state, tmp_path / "dino.pth")  # torch files are read with weights_only=True
    assert torch.equal(create_backbone("dino_vitb8", weights=tmp_path / "dino.pth", image_size=32).model.cls_token,
                       state["cls_token"])


def test_weights_file_of_another_model_is_refused(tmp_path):
    other = create_backbone("dinov2_vits14", pretrained=False, image_size=28).model.state_dict()
    weights = tmp_path / "wrong.safetensors"
    save_file({k: v.contiguous() for k, v in other.items()}, str(weights))
    with pytest.raises((ValueError, RuntimeError)):
        create_backbone("dino_vitb8", weights=weights, image_size=32)


def test_missing_weights_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        create_backbone("dino_vitb8", weights=tmp_path / "nope.pth", image_size=32)


def test_unknown_backbone_lists_the_known_ones():
    with pytest.raises(ValueError, match="efficientnet_lite0"):
        create_backbone("resnet9000")
    assert "dino_vitb8" in list_backbones()


def test_hub_backbone_fails_fast_without_network(monkeypatch):
    import socket
    import time

    from funad.features.backbones import base

    def unreachable(*args, **kwargs):
        raise OSError("network is unreachable")

    for name in ("HF_HUB_OFFLINE", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(socket, "create_connection", unreachable)
    base.hub_unreachable_reason.cache_clear()
    started = time.perf_counter()
    try:
        with pytest.raises(RuntimeError, match=r"unreachable.*--weights PATH.*HF_HUB_OFFLINE"):
            create_backbone("dinov2_vits14", pretrained=True, image_size=56)
    finally:
        base.hub_unreachable_reason.cache_clear()
    assert time.perf_counter() - started < 30  # hub retries take about a minute; a cold timm import, seconds


def test_timm_backbones_without_timm_name_the_hub_extra():
    """timm is the hub extra: without it funad imports and lists its backbones, and a timm backbone says how to
    install it (``sys.modules["timm"] = None`` makes ``import timm`` fail as if it were not installed)."""
    import subprocess
    import sys

    script = """
import sys
sys.modules["timm"] = None
from funad.features.backbones import create_backbone, list_backbones
import funad.model
assert "efficientnet_lite0" in list_backbones()
for name in ("efficientnet_lite0", "dinov2_vits14"):
    try:
        create_backbone(name, pretrained=False, image_size=56)
    except RuntimeError as error:
        print(error)
    else:
        raise SystemExit(f"{name} was created without timm")
"""
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    assert len(lines) == 2 and all("needs timm" in line and "pip install 'funad[hub]'" in line for line in lines)
