"""Bad input gets a clear error, no model file can run code, degenerate data gives no NaN."""

import ast
import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from funad import FunAD
from funad.cli import main
from funad.data.images import MAX_IMAGE_PIXELS, ImageLoadError, check_images
from funad.features.containers import FeatureSet
from funad.method.pseudo_labels import assign_pseudo_labels, min_max_normalise, noise_scale, perturb
from funad.model import MIN_TRAINING_IMAGES
from funad.persistence import ModelFormatError

from conftest import TINY

SOURCE = Path(__file__).parents[1] / "src" / "funad"


@pytest.fixture(scope="module")
def folder_with_corrupt_image(demo_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("messy")
    for path in sorted(demo_data.train_dir.glob("*.png")):
        shutil.copy(path, folder)
    corrupt = folder / "zz_truncated.png"
    corrupt.write_bytes(next(folder.glob("*.png")).read_bytes()[:200])
    return folder, corrupt


@pytest.fixture(scope="module")
def fitted_dir(folder_with_corrupt_image, tmp_path_factory, tiny_cli_flags):
    """A model fitted by the CLI on a folder with one corrupt file (shared by the tamper tests)."""
    folder, _ = folder_with_corrupt_image
    directory = tmp_path_factory.mktemp("fitted") / "model"
    assert main(["--quiet", "fit", str(folder), "--out", str(directory), "--no-cache", *tiny_cli_flags]) == 0
    return directory


# ----------------------------------------------------------------- bad images
def test_strict_turns_a_corrupt_image_into_an_error_naming_it(folder_with_corrupt_image, tmp_path, capsys,
                                                              tiny_cli_flags):
    folder, corrupt = folder_with_corrupt_image
    code = main(["fit", str(folder), "--strict", "--out", str(tmp_path / "m"), "--no-cache", *tiny_cli_flags])
    assert code == 1
    assert str(corrupt) in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_without_strict_a_corrupt_image_is_skipped_and_listed(folder_with_corrupt_image, fitted_dir, read_csv):
    _, corrupt = folder_with_corrupt_image
    rows = read_csv(fitted_dir / "skipped.csv")
    assert [row["path"] for row in rows] == [str(corrupt)] and rows[0]["reason"]
    train_paths = json.loads((fitted_dir / "model.json").read_text())["fitted"]["train_paths"]
    assert len(train_paths) == 20 and str(corrupt) not in train_paths


def test_warning_counts_skipped_images(folder_with_corrupt_image, caplog):
    folder, corrupt = folder_with_corrupt_image
    usable, skipped = check_images(sorted(folder.glob("*.png")))
    assert len(usable) == 20 and [s.path for s in skipped] == [corrupt]
    assert "skipped 1 of 21 image files" in caplog.text and str(corrupt) in caplog.text


def test_too_few_usable_images_says_how_many_and_where(folder_with_corrupt_image, tmp_path, capsys, tiny_cli_flags,
                                                       monkeypatch):
    from funad.model import FunAD

    folder, corrupt = folder_with_corrupt_image
    few = tmp_path / "few"
    few.mkdir()
    for path in sorted(folder.glob("*.png"))[:3] + [corrupt]:
        shutil.copy(path, few)

    def extract_training_set(*_args, **_kwargs):
        raise AssertionError("too few images to train on are counted before any feature is extracted")

    monkeypatch.setattr(FunAD, "extract_training_set", extract_training_set)
    assert main(["fit", str(few), "--out", str(tmp_path / "m"), "--no-cache", *tiny_cli_flags]) == 1
    message = capsys.readouterr().err
    assert f"at least {MIN_TRAINING_IMAGES} usable training images; found 3 in {few}" in message


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` and that holds no pixel data at all."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def test_oversized_image_is_refused_with_the_limit(tmp_path):
    huge = tmp_path / "huge.png"
    huge.write_bytes(_png_header(12_000, 10_000))  # 120 megapixels: over the default limit
    usable, skipped = check_images([huge])
    assert usable == [] and f"over the limit of {MAX_IMAGE_PIXELS:,} pixels" in skipped[0].reason
    with pytest.raises(ImageLoadError, match=rf"huge.png: .*{MAX_IMAGE_PIXELS:,}"):
        check_images([huge], strict=True)
    small_limit = tmp_path / "small.png"
    small_limit.write_bytes(_png_header(20, 10))
    with pytest.raises(ImageLoadError, match="200 pixels, over the limit of 100 pixels"):
        check_images([small_limit], strict=True, max_pixels=100)


# ----------------------------------------------------------------- tampered models
def _tampered_copy(fitted_dir: Path, tmp_path: Path, edit) -> Path:
    copy = tmp_path / "tampered"
    shutil.copytree(fitted_dir, copy)
    manifest = json.loads((copy / "model.json").read_text())
    edit(manifest)
    (copy / "model.json").write_text(json.dumps(manifest))
    return copy


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(format_version=99), "format version 99"),
    (lambda m: m["estimator"]["config"].update(tau_n=2.0), "invalid configuration.*tau_n"),
    (lambda m: m["estimator"]["config"].update(secret_hook="os.system"), "invalid configuration.*secret_hook"),
    (lambda m: m["estimator"]["config"].update(head_hidden=[64, 32]), "does not fit the configuration"),
    (lambda m: m["fitted"]["scorer"].update(name="nope"), "unknown scorer 'nope'"),
    (lambda m: m.pop("tensors_sha256"), "no 'tensors_sha256' \\(str\\) in the manifest"),
    (lambda m: m.pop("tensor_shapes"), "no 'tensor_shapes' \\(dict\\) in the manifest"),
    (lambda m: m.update(estimator=[]), "no 'estimator' \\(dict\\) in the manifest"),
    (lambda m: m["estimator"].pop("backbone"), "the estimator part lacks backbone"),
    (lambda m: m["estimator"]["config"].update(backbone="nosuch"),
     "model.json: invalid configuration \\(backbone must be one of"),
    (lambda m: m["tensor_shapes"].update(train_scores=[3]), "do not match the manifest"),
])
def test_tampered_manifest_is_refused(fitted_dir, tmp_path, edit, message):
    with pytest.raises(ModelFormatError, match=message):
        FunAD.load(_tampered_copy(fitted_dir, tmp_path, edit))


def test_a_bad_override_is_the_callers_error_not_the_manifests(fitted_dir):
    with pytest.raises(ValueError, match="device must be") as raised:
        FunAD.load(fitted_dir, device="gpu0")
    assert not isinstance(raised.value, ModelFormatError) and "model.json" not in str(raised.value)


def test_manifest_that_is_not_json_is_refused(fitted_dir, tmp_path):
    copy = tmp_path / "broken"
    shutil.copytree(fitted_dir, copy)
    (copy / "model.json").write_text("{truncated")
    with pytest.raises(ModelFormatError, match="model.json: unreadable model"):
        FunAD.load(copy)


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            yield node, ast.unparse(node.func)


def test_package_never_unpickles():
    """No pickle, and torch.load / np.load only in their pickle-free modes."""
    problems = []
    for path in sorted(SOURCE.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if any(n.split(".")[0] in ("pickle", "cPickle", "dill", "joblib", "cloudpickle") for n in names):
                    problems.append(f"{path}:{node.lineno}: imports a pickle module")
        for node, name in _calls(tree):
            keywords = {k.arg: k.value for k in node.keywords}
            safe = isinstance(keywords.get("weights_only"), ast.Constant) and keywords["weights_only"].value is True
            if name == "torch.load" and not safe:
                problems.append(f"{path}:{node.lineno}: torch.load without weights_only=True")
            if name == "torch.save":
                problems.append(f"{path}:{node.lineno}: torch.save writes a pickle")
            pickled = keywords.get("allow_pickle")
            if name in ("np.load", "numpy.load") and not (pickled is None or getattr(pickled, "value", True) is False):
                problems.append(f"{path}:{node.lineno}: np.load with allow_pickle")
    assert problems == []


# ----------------------------------------------------------------- numeric guards
def test_min_max_normalise_with_zero_range_gives_zeros():
    assert torch.equal(min_max_normalise(torch.full((5,), 3.0)), torch.zeros(5))
    assert torch.equal(min_max_normalise(torch.full((4,), float("inf"))), torch.zeros(4))
    assert torch.allclose(min_max_normalise(torch.tensor([1.0, 2.0, 3.0])), torch.tensor([0.0, 0.5, 1.0]))


def test_noise_scale_of_identical_images_is_zero_and_perturb_stays_finite():
    batch = torch.randn(1, 6, 4).expand(3, 6, 4).contiguous()  # three identical images
    sigma = noise_scale(batch)
    assert torch.equal(sigma, torch.zeros(4))
    noisy = perturb(batch[0], sigma, torch.Generator().manual_seed(0))
    assert torch.isfinite(noisy).all() and torch.equal(noisy, batch[0])


@pytest.mark.parametrize("distances", [torch.full((6,), float("inf")), torch.full((6,), 0.25), torch.zeros(6)])
def test_pseudo_labels_of_degenerate_distances(distances):
    labels = assign_pseudo_labels(distances, tau_n=0.5, tau_a=0.9)
    assert torch.isfinite(labels.normalised_distance).all()
    assert not labels.anomalous.any() and not labels.ambiguous.any()


def test_pseudo_labels_treat_inf_as_the_farthest():
    labels = assign_pseudo_labels(torch.tensor([0.0, 1.0, float("inf")]), tau_n=0.5, tau_a=0.9)
    assert labels.anomalous.tolist() == [False, True, True]
    assert torch.isfinite(labels.normalised_distance).all()


def test_zero_variance_features_train_without_nan(tmp_path):
    count, patches, dim = 10, 16, 24
    constant = np.full((patches, dim), 0.5, np.float16)
    features = FeatureSet([tmp_path / f"{i}.png" for i in range(count)], [constant] * count,
                          [np.full(8, 0.5, np.float16)] * count, grid=(4, 4))
    # Features without image files: no views to extract.
    model = FunAD(cache_dir=False, progress=False, **(TINY | dict(patches_per_image=8)), knn_corroboration_views="none")
    model.fit_features(features)
    assert np.isfinite(model.train_scores_).all() and all(np.isfinite(r.loss) for r in model.history_)
    assert model.judged_normal_.all()  # identical scores: every image is a candidate normal


def test_identical_images_give_finite_scores_and_maps(demo_data, tmp_path):
    image = sorted(demo_data.train_dir.glob("*.png"))[0]
    folder = tmp_path / "copies"
    folder.mkdir()
    for i in range(10):
        shutil.copy(image, folder / f"copy_{i}.png")
    model = FunAD(cache_dir=False, progress=False, **TINY).fit(folder)
    assert np.isfinite(model.train_scores_).all()
    predictions = list(model.predict([image, demo_data.test_paths[-1]]))
    assert all(np.isfinite(p.score) and np.isfinite(p.anomaly_map).all() for p in predictions)
