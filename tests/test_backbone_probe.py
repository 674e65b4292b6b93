"""benchmarks/backbone_probe.py on a tiny MVTec AD category: one table row per candidate (or swept configuration),
its input size, grid and feature width, and AUROCs that parse (no throughput is checked)."""

import math
import shutil

import pytest

from conftest import benchmark_script

COLUMNS = ("candidate", "size", "grid", "dim", "image_auroc", "pixel_auroc", "img_s", "cpu_ms")


@pytest.fixture(scope="module")
def probe():
    return benchmark_script("backbone_probe")


@pytest.fixture(scope="module")
def category(demo_data, tmp_path_factory):
    """The demo dataset in the layout the script reads: train/good, test/<type>, ground_truth/<type>."""
    root = tmp_path_factory.mktemp("probe") / "category"
    shutil.copytree(demo_data.train_dir, root / "train" / "good")
    shutil.copytree(demo_data.test_dir, root / "test")
    shutil.copytree(demo_data.root / "ground_truth", root / "ground_truth")
    return root


def table_rows(out: str) -> dict[str, dict[str, str]]:
    """The printed table's rows by candidate, each cell by column (no cell holds a space)."""
    header, *lines = out.strip().splitlines()
    assert header.split()[:2] == ["candidate", "size"]
    rows = [dict(zip(COLUMNS, line.split(), strict=True)) for line in lines]
    by_candidate = {row["candidate"]: row for row in rows}
    assert len(by_candidate) == len(rows)  # one row per candidate
    return by_candidate


def assert_auroc(text: str) -> None:
    assert 0.0 <= float(text) <= 1.0


def test_scores_each_candidate_and_times_it(probe, category, capsys):
    # The registered CNN at its own 224 px, and a small ONNX DINOv2 variant: two blocks concatenated, CLS appended.
    onnx = "onnx:layers=4-5,combine=concat,norm=1,cls=1,k=3,size=56"
    assert probe.main(["--data", str(category), "--candidates", "efficientnet_lite0", onnx,
                       "--batch", "4", "--repeats", "1"]) == 0
    captured = capsys.readouterr()
    assert "20 train images, 8 test images (4 anomalous)" in captured.err
    rows = table_rows(captured.out)
    assert list(rows) == ["efficientnet_lite0", onnx]
    assert [(row["size"], row["grid"], row["dim"]) for row in rows.values()] == [
        ("224", "28x28", "152"), ("56", "4x4", str(2 * 2 * 384))]  # (block 4 + block 5) x (patch + CLS)
    for row in rows.values():
        assert_auroc(row["image_auroc"])
        assert_auroc(row["pixel_auroc"])
        assert float(row["img_s"]) > 0 and float(row["cpu_ms"]) >= 0

    assert probe.main(["--data", str(category), "--candidates", "efficientnet_lite0", "--batch", "4",
                       "--repeats", "1", "--speed-only"]) == 0
    (row,) = table_rows(capsys.readouterr().out).values()
    assert math.isnan(float(row["image_auroc"])) and math.isnan(float(row["pixel_auroc"]))  # not scored
    assert float(row["img_s"]) > 0


def test_sweep_scores_every_configuration_of_the_onnx_blocks(probe, category, capsys, monkeypatch):
    # Scoring the maps is what 120 configurations cost: at 64 instead of 256 px a sixteenth of it.
    monkeypatch.setattr(probe, "MAP_SIZE", 64)
    assert probe.main(["--data", str(category), "--sweep", "--sweep-size", "28", "--batch", "8"]) == 0
    rows = table_rows(capsys.readouterr().out)
    # 9 single blocks and 3 block sets, each with and without the final norm, the CLS token and 3x3 pooling;
    # the block sets both averaged and concatenated.
    assert len(rows) == 9 * 8 + 3 * 8 * 2
    for name, row in rows.items():
        assert name.startswith("onnx:layers=")
        assert (row["size"], row["grid"], row["img_s"], row["cpu_ms"]) == ("28", "2x2", "-", "-")  # quality only
        assert_auroc(row["image_auroc"])
        assert_auroc(row["pixel_auroc"])
    assert rows["onnx:layers=7,norm=1,cls=0,k=1"]["dim"] == "384"
    assert rows["onnx:layers=6+7+8+9,combine=mean,norm=1,cls=1,k=3"]["dim"] == str(2 * 384)
    assert rows["onnx:layers=6+7+8+9,combine=concat,norm=0,cls=1,k=1"]["dim"] == str(2 * 4 * 384)
