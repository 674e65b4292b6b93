"""benchmarks/backbone_probe.py on a tiny MVTec AD category: one table row per candidate (or swept configuration),
its input size, grid and feature width, and AUROCs (no throughput is checked); its scoring on patch features whose
defect is known, and its reading of the data through funad's readers."""

import math
import shutil

import numpy as np
import pytest
from PIL import Image

from funad.benchmark.datasets import Dataset, Sample
from funad.data.preprocessing import IMAGENET_MEAN, IMAGENET_STD

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
    # The pretrained CNN finds the demo's defects and roughly where they are (1.0000 and 0.9532 when written).
    assert float(rows["efficientnet_lite0"]["image_auroc"]) >= 0.9
    assert float(rows["efficientnet_lite0"]["pixel_auroc"]) >= 0.85

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


def test_evaluate_finds_and_locates_a_far_patch(probe, monkeypatch):
    # A 4x4 grid at a 32 px input, maps at 32 px: patch (row, column) covers map pixels [8 row, 8 row + 8).
    monkeypatch.setattr(probe, "MAP_SIZE", 32)
    rng = np.random.default_rng(0)
    train = rng.normal(0, 0.1, (6, 16, 8))
    test = rng.normal(0, 0.1, (5, 16, 8))
    truth = {0: None, 1: None}
    for image, (row, column) in zip((2, 3), ((1, 2), (3, 0))):
        test[image, 4 * row + column] += 5.0
        mask = np.zeros((32, 32), dtype=bool)
        mask[8 * row:8 * row + 8, 8 * column:8 * column + 8] = True
        truth[image] = mask
    test[4, 5] += 5.0  # anomalous without a mask: in the image AUROC only
    labels = np.array([0, 0, 1, 1, 1])
    image_auroc, pixel_auroc = probe.evaluate(train, test, (4, 4), 32, probe.TestSet(labels, truth), 1.0, 0)
    assert image_auroc == 1.0
    assert pixel_auroc > 0.95
    # Counted as a normal image, the unmasked anomaly's bright patch would be false alarms.
    _, with_unmasked = probe.evaluate(train, test, (4, 4), 32, probe.TestSet(labels, {**truth, 4: None}), 1.0, 0)
    assert with_unmasked < pixel_auroc


def test_reads_masks_at_map_size_and_leaves_unmasked_anomalies_out(probe, category, monkeypatch):
    monkeypatch.setattr(probe, "MAP_SIZE", 16)
    masks = sorted((category / "ground_truth" / "defect").iterdir())
    images = sorted((category / "test" / "defect").iterdir())
    normal = sorted((category / "test" / "good").iterdir())[0]
    dataset = Dataset("demo", "mvtec", [], [Sample(normal, 0), Sample(images[0], 1, masks[0], "defect"),
                                            Sample(images[1], 1, None, "defect")])
    test = probe.read_test_set(dataset)
    assert test.labels.tolist() == [0, 1, 1]
    assert list(test.truth) == [0, 1] and test.truth[0] is None
    mask = test.truth[1]
    assert mask is not None and mask.shape == (16, 16) and mask.dtype == bool
    full = np.asarray(Image.open(masks[0]).convert("L")) > 0
    assert mask.any() and abs(mask.mean() - full.mean()) < 0.1  # the same defect, scaled


def test_images_are_read_by_funads_loader(probe, category, tmp_path):
    # EXIF orientation 6 (turn 90 degrees clockwise): the 40 x 20 file is a 20 x 40 photo.
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (40, 20), (200, 10, 10)).save(tmp_path / "turned.jpg", exif=exif)
    store = probe.ImageStore([tmp_path / "turned.jpg"])
    assert store.images[0].size == (20, 40)
    assert tuple(store.tensor(16, IMAGENET_MEAN, IMAGENET_STD).shape) == (1, 3, 16, 16)

    # A broken test image stops the probe with a message naming it, before any backbone is built.
    broken = tmp_path / "category"
    shutil.copytree(category, broken)
    bad = sorted((broken / "test" / "good").iterdir())[0]
    bad.write_bytes(b"not an image")
    with pytest.raises(SystemExit, match=bad.name):
        probe.main(["--data", str(broken), "--candidates", "no_such_backbone"])
