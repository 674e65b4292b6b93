"""Bad input refused with a clear message: the demo's working folder, unreadable ONNX files, --device, tau_m,
report --max-images, precision choices and the benchmark's flags."""

import argparse
import json
import logging
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pytest
from PIL import Image

from funad import demo
from funad.cli import build_parser, main
from funad.cli.dataclass_options import add_dataclass_options
from funad.config import FunADConfig
from funad.reports.html import write_report
from funad.reports.prediction_folder import COLUMNS, SCORES, score_row
from funad.runtime import OnnxModel
from funad.runtime.__main__ import main as runtime_main


def _subparser(command: str) -> argparse.ArgumentParser:
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return subparsers.choices[command]


def _usage_error(argv: list[str], capsys) -> str:
    """argparse's message for ``argv``, which it must refuse as a usage error (exit status 2)."""
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (16, 16)).save(folder / "a.png")
    return folder


# funad demo --out: only its own folders are replaced.

@pytest.mark.parametrize("name", ["data", "model"])
def test_demo_keeps_a_folder_it_did_not_write(tmp_path, capsys, name):
    mine = tmp_path / "work" / name / "mine"
    mine.mkdir(parents=True)
    (mine / "a.txt").write_text("x")
    assert main(["--quiet", "demo", "--out", str(tmp_path / "work")]) == 1
    assert f"{tmp_path / 'work' / name} already exists and {tmp_path / 'work'} has no .funad-demo" \
        in capsys.readouterr().err
    assert (mine / "a.txt").read_text() == "x" and not (tmp_path / "work" / demo.MARKER).exists()


def test_demo_reclaims_its_own_folder(tmp_path):
    out = tmp_path / "work"
    demo.claim_working_folder(out)  # a new folder: the demo's from now on
    (out / "data").mkdir()
    (out / "model").mkdir()
    demo.claim_working_folder(out)  # a rerun (or one after an interrupted run) may replace them
    (out / demo.MARKER).unlink()
    with pytest.raises(ValueError, match="data already exists"):
        demo.claim_working_folder(out)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        demo.claim_working_folder(tmp_path / "file")


# An ONNX file onnxruntime cannot read, and a model directory given to the ONNX runtime.

@pytest.mark.parametrize("content", [b"not a model", b""])
def test_unreadable_onnx_file_is_named(tmp_path, content):
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"model\.onnx is not a readable ONNX model \(onnxruntime: .*failed"):
        OnnxModel(path)


@pytest.fixture
def unreadable_onnx(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not a model")
    return path


def test_predict_reports_an_unreadable_onnx_file_in_one_line(unreadable_onnx, tmp_path, images, capsys):
    assert main(["--quiet", "predict", str(unreadable_onnx), str(images), "--out", str(tmp_path / "predicted")]) == 1
    error = capsys.readouterr().err
    assert f"{unreadable_onnx} is not a readable ONNX model" in error and "Traceback" not in error


def test_runtime_reports_an_unreadable_onnx_file_in_one_line(unreadable_onnx, tmp_path, images, caplog):
    with caplog.at_level(logging.ERROR):
        assert runtime_main([str(unreadable_onnx), str(images), "--out", str(tmp_path / "scored")]) == 1
    assert f"{unreadable_onnx} is not a readable ONNX model" in caplog.text


def test_runtime_points_a_model_directory_to_funad_predict(tmp_path, images, caplog):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    with caplog.at_level(logging.ERROR):
        assert runtime_main([str(model_dir), str(images), "--out", str(tmp_path / "scored")]) == 1
    assert "model directory written by `funad fit` is scored with `funad predict" in caplog.text
    assert "not found" not in caplog.text


def test_runtime_on_inputs_holding_no_image_is_a_usage_error_as_predicts_is(unreadable_onnx, tmp_path, caplog):
    empty = tmp_path / "empty"
    empty.mkdir()
    with caplog.at_level(logging.ERROR):
        assert runtime_main([str(unreadable_onnx), str(empty), "--out", str(tmp_path / "scored")]) == 2
    assert f"no image files in {empty}" in caplog.text


# --device: one check, in the configuration and on the command line.

def test_devices_are_checked_alike_in_the_configuration_and_on_the_command_line(capsys):
    for device in ("auto", "cpu", "cuda", "cuda:1"):
        assert FunADConfig(device=device).device == device
        assert build_parser().parse_args(["predict", "m", "x", "--out", "o", "--device", device]).device == device
    for device in ("gpu", "cuda:", "CPU", "cuda:0 "):
        with pytest.raises(ValueError, match=f"device must be auto, cpu, cuda or cuda:N .*got {device!r}"):
            FunADConfig(device=device)
        for command in (["predict", "m", "x", "--out", "o"], ["serve", "m"], ["audit", "m"]):
            error = _usage_error([*command, "--device", device], capsys)
            assert f"argument --device: device must be auto, cpu, cuda or cuda:N (GPU number N), got {device!r}" \
                in error


# tau_m.

def test_tau_m_must_be_positive():
    with pytest.raises(ValueError, match=r"tau_m must lie in \(0, 1\], got 0"):
        FunADConfig(tau_m=0.0)
    assert FunADConfig(tau_m=0.01).tau_m == 0.01


# funad report --max-images.

def test_report_max_images_must_be_a_positive_count(capsys):
    for value in ("0", "-5", "2.5", "x"):
        error = _usage_error(["report", "p", "--max-images", value], capsys)
        assert f"argument --max-images: must be a whole number of at least 1, got {value!r}" in error
    assert build_parser().parse_args(["report", "p", "--max-images", "3"]).max_images == 3
    assert build_parser().parse_args(["report", "p"]).max_images is None


@pytest.mark.parametrize("argv, message", [
    (["serve", "m", "--port", "70000"], "argument --port: must be a port number from 1 to 65535, got '70000'"),
    (["serve", "m", "--max-connections", "0"], "argument --max-connections: must be a whole number of at least 1"),
    (["serve", "m", "--max-upload-mb", "-1"], "argument --max-upload-mb: must be a number above 0, got '-1'"),
    (["audit", "m", "--out", "o", "--threshold", "nan"], "argument --threshold: must be a finite number, got 'nan'"),
    (["predict", "m", "i", "--out", "o", "--threshold", "inf"], "argument --threshold: must be a finite number"),
    (["report", "p", "--train-root", "/no/such/folder"], "argument --train-root: no such folder: /no/such/folder"),
    (["audit", "m", "--out", "o", "--train-root", __file__], f"argument --train-root: {__file__} is not a folder"),
])
def test_values_out_of_range_are_usage_errors(argv, message, capsys):
    assert message in _usage_error(argv, capsys)


def test_benchmark_usage_errors_found_after_parsing_are_exit_status_2(tmp_path, capsys):
    assert main(["benchmark", "--out", str(tmp_path / "out")]) == 2
    assert "give DATASET..., --normal-dir/--abnormal-dir, or --split FILE" in capsys.readouterr().err
    assert main(["benchmark", "--normal-dir", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "needs both --normal-dir and --abnormal-dir" in capsys.readouterr().err
    assert "argument --seeds: must be a whole number of at least 0, got '-1'" in _usage_error(
        ["benchmark", "d", "--out", "o", "--seeds", "-1"], capsys)


def test_runtime_batch_size_must_be_a_positive_count(capsys):
    with pytest.raises(SystemExit) as exit_info:
        runtime_main(["m.onnx", "i", "--out", "o", "--batch-size", "0"])
    assert exit_info.value.code == 2
    assert "argument --batch-size: must be a whole number of at least 1, got '0'" in capsys.readouterr().err


@pytest.mark.parametrize("setting, message", [
    ({"image_size": 0}, "image_size must be >= 1 or None"),
    ({"patches_per_image": -3}, "patches_per_image must be >= 1 or None"),
    ({"head_hidden": (-1, 0)}, "head_hidden and batch_size_extract must be >= 1"),
    ({"batch_size_extract": 0}, "head_hidden and batch_size_extract must be >= 1"),
    ({"num_workers": -1}, "num_workers >= 0"),
    ({"learning_rate": -1.0}, "learning_rate must be a finite number > 0"),
    ({"map_sigma": -2.0}, "map_sigma must be a finite number >= 0"),
])
def test_configuration_values_out_of_range_are_refused(setting, message):
    with pytest.raises(ValueError, match=message):
        FunADConfig(**setting)
    assert FunADConfig(map_sigma=0.0).map_sigma == 0.0  # no smoothing is a setting


@pytest.mark.parametrize("setting, message", [
    ({"epochs": 2.5}, "epochs must be int, got 2.5"),
    ({"epochs": "3"}, "epochs must be int, got '3'"),
    ({"image_size": True}, "image_size must be int or None, got True"),
    ({"weights": 3}, "weights must be str or None, got 3"),
])
def test_configuration_values_of_the_wrong_type_are_refused(setting, message):
    with pytest.raises(TypeError, match=message):
        FunADConfig(**setting)
    assert FunADConfig(learning_rate=1).learning_rate == 1  # an int is a number


def test_numpy_numbers_are_stored_as_the_fields_types():
    config = FunADConfig(epochs=np.int64(3), tau_n=np.float32(0.5), knn_components=np.int32(64), learning_rate=1)
    assert (type(config.epochs), type(config.tau_n), type(config.knn_components)) == (int, float, int)
    assert type(config.learning_rate) is float
    json.dumps(config.to_dict())  # what a saved model writes


def test_an_unknown_backbone_is_refused_at_construction():
    with pytest.raises(ValueError, match="backbone must be one of .*'efficientnet_lite0'.*got 'nope'"):
        FunADConfig(backbone="nope")


@pytest.mark.parametrize("flag, value, message", [
    ("--coreset-fraction", "5", "coreset_fraction must lie in (0, 1]"),
    ("--softpatch-noise", "-1", "softpatch_noise must lie in [0, 1)"),
    ("--funad-star-ratio", "3", "funad_star_ratio must lie in [0, 1]"),
    ("--epochs", "0", "epochs must be >= 1"),
])
def test_benchmark_refuses_bad_settings_before_writing_anything(flag, value, message, demo_data, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["benchmark", str(demo_data.root), "--out", str(out), flag, value]) == 1
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_write_report_refuses_fewer_than_one_row(tmp_path):
    """0 is no stand-in for the default 200, and it would leave the folder unread: a page of 0 images."""
    folder = tmp_path / "predicted"
    folder.mkdir()
    rows = [score_row(tmp_path / f"{index}.png", 0.1 * index, 0.5, False) for index in range(3)]
    (folder / SCORES).write_text("\n".join(",".join(map(str, row)) for row in [COLUMNS, *rows]) + "\n")
    for count in (0, -5):
        with pytest.raises(ValueError, match=f"max_images must be at least 1, got {count}"):
            write_report(folder, max_images=count)
    assert "Showing all 3." in write_report(folder).read_text()


# --precision offers only what a backbone runs.

def test_bf16_is_no_precision_choice():
    with pytest.raises(ValueError, match="precision must be one of 'fp32', 'int8', got 'bf16'"):
        FunADConfig(precision="bf16")
    for command in ("fit", "benchmark"):
        precision = next(a for a in _subparser(command)._actions if a.dest == "precision")
        assert list(precision.choices) == ["fp32", "int8"]


# funad benchmark offers no --seed and only level patch.

def test_benchmark_offers_neither_seed_nor_level_image(capsys):
    benchmark, fit = _subparser("benchmark"), _subparser("fit")
    assert "seed" not in {a.dest for a in benchmark._actions} and "--seed " not in benchmark.format_help()
    assert "seed" in {a.dest for a in fit._actions}  # fit keeps both
    assert list(next(a for a in benchmark._actions if a.dest == "level").choices) == ["patch"]
    assert list(next(a for a in fit._actions if a.dest == "level").choices) == ["patch", "image"]
    assert "unrecognized arguments: --seed 3" in _usage_error(["benchmark", "d", "--out", "o", "--seed", "3"], capsys)
    error = _usage_error(["benchmark", "d", "--out", "o", "--level", "image"], capsys)
    assert "argument --level: invalid choice: 'image'" in error
    assert build_parser().parse_args(["benchmark", "d", "--out", "o", "--level", "patch"]).level == "patch"


@dataclass
class _Settings:
    count: int = field(default=1, metadata={"help": "how many"})
    mode: Literal["a", "b"] = field(default="a", metadata={"help": "which"})


def test_dataclass_options_exclude_fields_and_narrow_choices():
    parser = argparse.ArgumentParser()
    add_dataclass_options(parser, _Settings, {"mode": ("a",)}, exclude={"count"})
    assert vars(parser.parse_args(["--mode", "a"])) == {"mode": "a"}
    with pytest.raises(SystemExit):
        parser.parse_args(["--count", "2"])
    with pytest.raises(TypeError, match="_Settings has no field colour"):
        add_dataclass_options(argparse.ArgumentParser(), _Settings, exclude={"colour"})
