"""No lost work: checkpoints resume to exactly the uninterrupted result; extracted features persist."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from funad import FunAD
from funad.cli import main
from funad.cli.fit import run_folder
from funad.features.backbones import create_backbone
from funad.features.cache import FeatureCache
from funad.features.extraction import extract_features
from funad.method.checkpoint import CheckpointError, TrainingCheckpoint

from conftest import EXTRACTIONS_PER_FIT, TINY

EPOCHS = 3
SETTINGS = dict(TINY, epochs=EPOCHS)


@pytest.fixture(scope="module")
def features(demo_data):
    return FunAD(cache_dir=False, progress=False, **SETTINGS).extract(sorted(demo_data.train_dir.glob("*.png")))


@pytest.fixture(scope="module")
def reference(features):
    return FunAD(cache_dir=False, progress=False, **SETTINGS).fit_features(features)


def _interrupt_after_epoch(epoch: int):
    def callback(state):
        if state.epoch == epoch:
            raise KeyboardInterrupt
    return callback


def _assert_same_model(first: FunAD, second: FunAD) -> None:
    np.testing.assert_array_equal(first.train_scores_, second.train_scores_)
    assert first.history_ == second.history_
    for (name, a), (_, b) in zip(first.local_net_.state_dict().items(), second.local_net_.state_dict().items()):
        assert torch.equal(a, b), name


def _interrupted_checkpoint(features, folder: Path, **settings) -> None:
    with pytest.raises(KeyboardInterrupt):
        FunAD(cache_dir=False, progress=False, **(SETTINGS | settings)).fit_features(
            features, checkpoint=TrainingCheckpoint(folder, resume=False), on_epoch_end=_interrupt_after_epoch(1))
    assert json.loads((folder / "checkpoint.json").read_text())["epoch"] == 1


def test_interrupted_fit_resumes_to_the_identical_model(features, reference, tmp_path):
    folder = tmp_path / "checkpoint"
    _interrupted_checkpoint(features, folder)
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint.json", "epoch-00001.safetensors"]

    resumed = FunAD(cache_dir=False, progress=False, **SETTINGS).fit_features(
        features, checkpoint=TrainingCheckpoint(folder, resume=True))
    _assert_same_model(resumed, reference)
    # the checkpoint follows the run: only the last epoch is kept
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint.json", f"epoch-{EPOCHS:05d}.safetensors"]


def test_without_resume_an_old_checkpoint_is_replaced(features, reference, demo_data, tmp_path):
    folder = tmp_path / "checkpoint"
    _interrupted_checkpoint(features, folder)
    fresh = FunAD(cache_dir=False, progress=False, **SETTINGS).fit_features(
        features, checkpoint=TrainingCheckpoint(folder, resume=False))
    _assert_same_model(fresh, reference)
    # same data and seed on the CPU: the predictions are identical too
    np.testing.assert_array_equal(fresh.score(demo_data.test_paths), reference.score(demo_data.test_paths))


def test_fun_ad_star_run_resumes_despite_fresh_synthetic_paths(demo_data, tmp_path):
    """FUN-AD*'s synthetic anomalies get a new temporary folder in every run."""
    folder = tmp_path / "checkpoint"
    settings = SETTINGS | dict(synthetic_ratio=0.1)
    with pytest.raises(KeyboardInterrupt):
        FunAD(cache_dir=False, progress=False, **settings).fit(
            demo_data.train_dir, checkpoint=TrainingCheckpoint(folder, resume=False),
            on_epoch_end=_interrupt_after_epoch(1))
    interrupted_epoch = json.loads((folder / "checkpoint.json").read_text())["history"][0]
    resumed = FunAD(cache_dir=False, progress=False, **settings).fit(
        demo_data.train_dir, checkpoint=TrainingCheckpoint(folder, resume=True))
    assert len(resumed.history_) == EPOCHS and vars(resumed.history_[0]) == interrupted_epoch


def test_checkpoint_of_another_configuration_is_refused(features, tmp_path):
    folder = tmp_path / "checkpoint"
    _interrupted_checkpoint(features, folder)
    other = FunAD(cache_dir=False, progress=False, **(SETTINGS | dict(tau_n=0.4)))
    with pytest.raises(CheckpointError, match=r"different run \(changed: configuration\).*--resume.*delete"):
        other.fit_features(features, checkpoint=TrainingCheckpoint(folder, resume=True))
    # speed-only settings may change between the interrupted run and the resumed one
    FunAD(cache_dir=False, progress=False, **(SETTINGS | dict(num_workers=1))).fit_features(
        features, checkpoint=TrainingCheckpoint(folder, resume=True))


def test_checkpoint_of_another_training_set_is_refused(features, tmp_path):
    folder = tmp_path / "checkpoint"
    _interrupted_checkpoint(features, folder)
    subset = type(features)(features.paths[1:], features.patches[1:], features.globals_[1:], features.grid)
    with pytest.raises(CheckpointError, match="training images, .*features"):
        FunAD(cache_dir=False, progress=False, **SETTINGS).fit_features(
            subset, checkpoint=TrainingCheckpoint(folder, resume=True))


def test_corrupt_checkpoint_is_a_clear_error(features, tmp_path):
    folder = tmp_path / "checkpoint"
    _interrupted_checkpoint(features, folder)
    tensors = folder / "epoch-00001.safetensors"
    data = bytearray(tensors.read_bytes())
    data[-3] ^= 0xFF
    tensors.write_bytes(bytes(data))
    model = FunAD(cache_dir=False, progress=False, **SETTINGS)
    with pytest.raises(CheckpointError, match=r"epoch-00001.safetensors: missing or altered"):
        model.fit_features(features, checkpoint=TrainingCheckpoint(folder, resume=True))
    (folder / "checkpoint.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"checkpoint.json: unreadable checkpoint"):
        model.fit_features(features, checkpoint=TrainingCheckpoint(folder, resume=True))


def test_killed_cli_run_resumes_to_the_identical_model(demo_data, tmp_path, tiny_cli_flags, cli_flags):
    """SIGKILL a real `funad fit` after its first checkpoint; `--resume` must finish it identically."""
    epochs = 12  # the kill must land between the first and the last checkpoint: a wide window on a loaded machine
    cache = tmp_path / "cache"
    command = ["fit", str(demo_data.train_dir), "--cache-dir", str(cache),
               *tiny_cli_flags, *cli_flags({"epochs": epochs})]
    interrupted = tmp_path / "interrupted"
    manifest = run_folder(interrupted) / "checkpoint" / "checkpoint.json"
    # The same thread count as this process (conftest): float sums must add up in the same order.
    env = os.environ | {"PYTHONPATH": str(Path(__file__).parents[1] / "src"), "OMP_NUM_THREADS": "2"}
    process = subprocess.Popen([sys.executable, "-m", "funad.cli", "--quiet", *command, "--out", str(interrupted)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not manifest.exists():
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()
    assert process.returncode == -signal.SIGKILL and not interrupted.exists()
    assert 1 <= json.loads(manifest.read_text())["epoch"] < epochs
    cached = {p: p.stat().st_mtime_ns for p in cache.rglob("*.npy")}
    assert len(cached) == 2 * 20 * EXTRACTIONS_PER_FIT  # every image's features (and views) survived the kill

    assert main(["--quiet", *command, "--out", str(interrupted), "--resume"]) == 0
    assert not run_folder(interrupted).exists()  # removed once the model is saved
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*.npy")} == cached  # read, not extracted again
    uninterrupted = tmp_path / "uninterrupted"
    assert main(["--quiet", *command, "--out", str(uninterrupted)]) == 0

    resumed, reference = (load_file(str(d / "model.safetensors")) for d in (interrupted, uninterrupted))
    assert resumed.keys() == reference.keys()
    for name in reference:
        assert torch.equal(resumed[name], reference[name]), name
    history = [json.loads((d / "model.json").read_text())["fitted"]["history"] for d in (interrupted, uninterrupted)]
    assert history[0] == history[1] and len(history[0]) == epochs


def test_features_extracted_before_a_crash_are_reused(demo_data, tmp_path):
    paths = sorted(demo_data.train_dir.glob("*.png"))[:8]
    torch.manual_seed(0)
    backbone = create_backbone("efficientnet_lite0", pretrained=False, image_size=64)
    cache = FeatureCache(tmp_path, backbone.describe(), "test-weights")
    forward = backbone.forward
    seen = []

    def crash_on_second_batch(images):
        if seen:
            raise KeyboardInterrupt
        seen.append(len(images))
        return forward(images)

    backbone.forward = crash_on_second_batch
    with pytest.raises(KeyboardInterrupt):
        extract_features(backbone, paths, cache=cache, batch_size=4, num_workers=0, progress=False)
    assert len(list(cache.folder.glob("*.patches.npy"))) == 4

    def counting(images):
        seen.append(len(images))
        return forward(images)

    backbone.forward = counting
    seen.clear()
    rerun = extract_features(backbone, paths, cache=cache, batch_size=4, num_workers=0, progress=False)
    assert sum(seen) == 4 and len(rerun) == 8  # only the images the crash left undone
    direct = extract_features(backbone, paths[:4], batch_size=4, num_workers=0, progress=False)
    for cached, fresh in zip(rerun.patches[:4], direct.patches):
        np.testing.assert_array_equal(cached, fresh)


def test_cache_of_another_backbone_or_preprocessing_is_not_used(tmp_path):
    description = {"name": "a", "preprocessing": {"image_size": 64, "mean": [0.5] * 3, "std": [0.2] * 3},
                   "grid": [2, 2], "patch_dim": 3, "global_dim": 5}
    original = FeatureCache(tmp_path, description, "weights-1")
    original.put("image", np.ones((4, 3), np.float16), np.ones(5, np.float16))
    assert original.get("image") is not None

    resized = json.loads(json.dumps(description))
    resized["preprocessing"]["image_size"] = 96
    renormalised = json.loads(json.dumps(description))
    renormalised["preprocessing"]["mean"] = [0.4] * 3
    for other in (FeatureCache(tmp_path, resized, "weights-1"), FeatureCache(tmp_path, renormalised, "weights-1"),
                  FeatureCache(tmp_path, dict(description, name="b"), "weights-1"),
                  FeatureCache(tmp_path, description, "weights-2")):
        assert other.folder != original.folder and other.get("image") is None

    # a folder whose meta.json records another backbone is refused, not read
    (original.folder / "meta.json").write_text(json.dumps({"backbone": dict(description, name="b")}))
    with pytest.raises(RuntimeError, match="another backbone"):
        FeatureCache(tmp_path, description, "weights-1")


def test_ctrl_c_during_extraction_names_what_is_kept(demo_data, tmp_path, monkeypatch, capsys, tiny_cli_flags):
    """Interrupted before any epoch finished: the message names the feature cache, a folder that exists."""
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(FunAD, "fit_features", interrupt)
    cache = tmp_path / "cache"
    with pytest.raises(SystemExit) as exit_info:
        main(["--quiet", "fit", str(demo_data.train_dir), "--out", str(tmp_path / "model"), "--cache-dir", str(cache),
              *tiny_cli_flags])
    assert exit_info.value.code == 130
    message = capsys.readouterr().err
    assert "no epoch had finished" in message and "--resume" not in message
    named = message.split("feature cache ")[1].split(",")[0]
    assert Path(named).is_dir() and Path(named).is_relative_to(cache)
