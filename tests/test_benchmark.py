"""`funad benchmark`: dataset layouts, the contamination protocol, FUN-AD* and the end-to-end command."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from funad import FunAD
from funad.benchmark.datasets import load_dataset, parse_dataset
from funad.benchmark.protocol import load_split, make_split
from funad.cli import main
from funad.config import POOL_MAX_PATCHES
from funad.data.augment import write_synthetic_anomalies

from conftest import TINY


def _write_image(path, value=128, size=16):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path)
    return path


# --------------------------------------------------------------------------- layouts


def test_mvtec_layout_of_the_demo_dataset(demo_data):
    dataset = load_dataset(demo_data.root)
    assert dataset.layout == "mvtec"
    assert len(dataset.train) == 20
    assert sorted(s.path for s in dataset.test) == sorted(demo_data.test_paths)
    anomalies = [s for s in dataset.test if s.label]
    assert len(anomalies) == 4 and all(s.mask == demo_data.test_masks[s.path] for s in anomalies)
    assert dataset.has_masks


def test_visa_layout(tmp_path):
    rows = [["object", "split", "label", "image", "mask"]]
    for index in range(5):
        image = f"candle/Data/Images/Normal/{index:04d}.JPG"
        _write_image(tmp_path / image)
        rows.append(["candle", "train" if index < 4 else "test", "normal", image, ""])
    image, mask = "candle/Data/Images/Anomaly/0000.JPG", "candle/Data/Masks/Anomaly/0000.png"
    _write_image(tmp_path / image), _write_image(tmp_path / mask, 255)
    rows += [["candle", "test", "anomaly", image, mask], ["pcb1", "train", "normal", "x.JPG", ""]]
    (tmp_path / "split_csv").mkdir()
    with open(tmp_path / "split_csv" / "1cls.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    dataset = load_dataset(tmp_path, "candle")
    assert dataset.layout == "visa" and len(dataset.train) == 4
    assert [(s.label, s.mask) for s in dataset.test] == [(0, None), (1, tmp_path / mask)]
    with pytest.raises(ValueError, match="--category is required"):
        load_dataset(tmp_path)


def test_generic_folder_layout_with_and_without_masks(tmp_path):
    for index in range(10):
        _write_image(tmp_path / "normal" / f"n{index}.png")
    for index in range(3):
        _write_image(tmp_path / "abnormal" / f"a{index}.png", 30)
    _write_image(tmp_path / "masks" / "a0_mask.png", 255)
    dataset = load_dataset(tmp_path)
    assert dataset.layout == "folders"
    assert len(dataset.train) == 8  # every 5th normal is held out for testing
    assert [s.label for s in dataset.test] == [0, 0, 1, 1, 1]
    assert [s.mask.name if s.mask else None for s in dataset.test if s.label] == ["a0_mask.png", None, None]
    (tmp_path / "masks" / "a0_mask.png").unlink()
    (tmp_path / "masks").rmdir()
    assert not load_dataset(tmp_path).has_masks


def test_unknown_layout_names_the_folder(tmp_path):
    _write_image(tmp_path / "pictures" / "x.png")
    with pytest.raises(ValueError, match=f"{tmp_path}: no known dataset layout"):
        load_dataset(tmp_path)


def test_an_mvtec_root_without_the_category_lists_its_categories(tmp_path):
    for category in ("bottle", "screw"):
        for part in ("train", "test"):
            (tmp_path / category / part).mkdir(parents=True)
    with pytest.raises(ValueError, match=f"{tmp_path}: no category 'srew'; .*found: bottle, screw"):
        load_dataset(tmp_path, "srew")
    with pytest.raises(ValueError, match=f"{tmp_path}: several categories; name one as {tmp_path}:CATEGORY"):
        load_dataset(tmp_path)
    (tmp_path / "cable" / "train").mkdir(parents=True)
    with pytest.raises(ValueError, match="cable: an MVTec AD category needs train/ and test/ folders"):
        load_dataset(tmp_path, "cable")


# --------------------------------------------------------------------------- protocol


def test_split_moves_int_ratio_times_normals_and_settings_differ(demo_data):
    dataset = load_dataset(demo_data.root)
    split = make_split(dataset, 0.15, seed=4)
    moved = split.moved_paths
    assert len(moved) == int(0.15 * 20) == 3
    assert split.train[:20] == dataset.train and set(split.train[20:]) == moved
    anomalies = {s.path for s in dataset.test if s.label}
    assert moved <= anomalies
    assert {s.path for s in split.test_set("overlap")} == {s.path for s in dataset.test}
    assert {s.path for s in split.test_set("no-overlap")} == {s.path for s in dataset.test} - moved
    assert make_split(dataset, 0.15, seed=4).moved_paths == moved
    assert len({frozenset(make_split(dataset, 0.15, seed=s).moved_paths) for s in range(8)}) > 1
    assert make_split(dataset, 0.0, seed=0).moved_paths == set()
    with pytest.raises(ValueError, match="only 4"):
        make_split(dataset, 0.2, seed=0)


def test_split_file_round_trip(demo_data, tmp_path):
    split = make_split(load_dataset(demo_data.root), 0.1, seed=1)
    path = split.save(tmp_path)
    assert path.name == f"{split.category}_0.1_1.json"
    loaded = load_split(path)
    assert (loaded.train, loaded.moved, loaded.test) == (split.train, split.moved, split.test)
    data = json.loads(path.read_text())
    data["train"][0]["path"] = str(tmp_path / "gone.png")
    path.write_text(json.dumps(data))
    with pytest.raises(FileNotFoundError, match="gone.png"):
        load_split(path)
    data["format"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"not a readable split file .*split format 99"):
        load_split(path)


# --------------------------------------------------------------------------- FUN-AD*


def test_synthetic_anomalies_are_deterministic_files(demo_data, tmp_path):
    paths = sorted(demo_data.train_dir.iterdir())
    first = write_synthetic_anomalies(paths, 0.1, seed=0, folder=tmp_path / "a")
    second = write_synthetic_anomalies(paths, 0.1, seed=0, folder=tmp_path / "b")
    assert len(first) == round(0.1 * 20) == 2
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    assert write_synthetic_anomalies(paths, 0.0, seed=0, folder=tmp_path / "c") == []


def test_funad_star_trains_with_synthetic_images_but_reports_only_real_ones(demo_data):
    from funad.model import FunAD

    model = FunAD(cache_dir=False, progress=False, synthetic_ratio=0.25, **TINY).fit(demo_data.train_dir)
    assert len(model.train_paths_) == len(model.train_scores_) == len(model.judged_normal_) == 20
    assert all(p.parent == demo_data.train_dir for p in model.train_paths_)


def test_the_label_metrics_are_those_of_each_setting_s_images_at_the_threshold(demo_data):
    from funad.benchmark.runner import Evaluator
    from funad.metrics import threshold_metrics
    from funad.model import FunAD

    class MeanScorer:  # image score: the mean of its features, known without the evaluator
        def score(self, patches):
            return patches.mean(dim=-1), patches.mean(dim=(1, 2))

    split = make_split(load_dataset(demo_data.root), 0.1, 0)
    model = FunAD(cache_dir=False, progress=False, **TINY)
    features = model.extract(split.train + [sample.path for sample in split.test])
    evaluator = Evaluator(split, ("no-overlap", "overlap"), features, model, pixels=False)
    row = {path: index for index, path in enumerate(features.paths)}
    image_scores = features.method_features("patch").take(range(len(features))).float().mean(dim=(1, 2)).numpy()
    threshold = float(np.median(image_scores))
    results, _ = evaluator.evaluate(MeanScorer(), threshold)
    for setting, metrics in results.items():
        tested = split.test_set(setting)
        expected = threshold_metrics([s.label for s in tested], image_scores[[row[s.path] for s in tested]] > threshold)
        assert metrics["label_recall"] == pytest.approx(expected["recall"])
        assert metrics["label_false_alarm_rate"] == pytest.approx(expected["false_alarm_rate"])
    assert 0 < results["overlap"]["label_recall"] < 1 or 0 < results["overlap"]["label_false_alarm_rate"] < 1
    assert "label_recall" not in evaluator.evaluate(MeanScorer())[0]["overlap"]  # no threshold: no labels


# --------------------------------------------------------------------------- end to end


def test_benchmark_command_writes_every_method_and_setting(demo_data, tmp_path, capsys, tiny_cli_flags):
    out = tmp_path / "results"
    assert main(["--quiet", "benchmark", str(demo_data.root), "--contamination", "0.1", "--seeds", "0",
                 "--out", str(out), "--no-cache", *tiny_cli_flags]) == 0
    results = json.loads((out / "results.json").read_text())
    runs = {(r["method"], r["setting"]): r for r in results["runs"]}
    methods, settings = ("funad", "funad*", "patchcore", "softpatch"), ("no-overlap", "overlap")
    assert set(runs) == {(m, s) for m in methods for s in settings}
    for run in runs.values():
        for metric in ("image_auroc", "pixel_auroc", "aupro", "image_f1_max"):
            assert 0.0 <= run[metric] <= 1.0
        assert run["num_moved"] == 2 and run["fit_seconds"] > 0
        # How the label-free threshold's labels fare: funad's, the peers have none.
        has_threshold = run["method"].startswith("funad")
        assert all((metric in run) == has_threshold for metric in ("label_recall", "label_false_alarm_rate"))
        assert not has_threshold or 0.0 <= run["label_recall"] <= 1.0 and 0.0 <= run["label_false_alarm_rate"] <= 1.0
    assert runs[("funad", "overlap")]["num_test"] == 8 and runs[("funad", "no-overlap")]["num_test"] == 6
    assert {"torch", "faiss-cpu", "scikit-learn"} <= set(results["versions"])
    assert "funad*" in capsys.readouterr().out
    split_file = out / "splits" / f"{demo_data.root.name}_0.1_0.json"
    assert split_file.is_file()
    assert results["split_files"] == [str(split_file)] and results["complete"] is True
    assert results["aspect"] == "stretch"  # "auto" on square photos

    # The written split reruns as it is, here for one quick method.
    rerun = tmp_path / "rerun"
    assert main(["--quiet", "benchmark", "--split", str(split_file), "--methods", "patchcore", "--setting", "overlap",
                 "--out", str(rerun), "--no-cache", *tiny_cli_flags]) == 0
    rerun_results = json.loads((rerun / "results.json").read_text())
    assert [(r["method"], r["setting"], r["num_moved"]) for r in rerun_results["runs"]] == [("patchcore", "overlap", 2)]
    assert json.loads((rerun / "splits" / split_file.name).read_text()) == json.loads(split_file.read_text())


def test_benchmark_keeps_the_aspect_of_training_photos_of_different_shapes(photos_of_two_shapes, tmp_path,
                                                                           tiny_cli_flags):
    out = tmp_path / "results"
    assert main(["--quiet", "benchmark", str(photos_of_two_shapes), "--contamination", "0.1", "--seeds", "0",
                 "--methods", "patchcore", "--out", str(out), "--no-cache", *tiny_cli_flags]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["aspect"] == "keep" and results["image_size"] == 64  # the given input side
    assert all(0.0 <= run["pixel_auroc"] <= 1.0 for run in results["runs"])


def test_benchmark_peers_pools_grow_with_an_input_enlarged_for_letterboxed_photos(photos_of_two_shapes, tmp_path,
                                                                                 tiny_cli_flags, monkeypatch):
    from funad.benchmark import runner

    seen = []

    def record_and_stop(method, split, train, options, peer_pool_cap):
        seen.append((train.grid, options.funad_config["image_size"], options.funad_config["knn_pool_max_patches"],
                     peer_pool_cap))
        raise RuntimeError("recorded")

    monkeypatch.setattr(runner, "_fit_method", record_and_stop)
    pairs = zip(tiny_cli_flags[::2], tiny_cli_flags[1::2], strict=True)
    flags = [item for flag, value in pairs if flag != "--image-size" for item in (flag, value)]
    assert main(["--quiet", "benchmark", str(photos_of_two_shapes), "--contamination", "0.1", "--seeds", "0",
                 "--methods", "patchcore", "--out", str(tmp_path / "results"), "--no-cache", *flags]) == 1
    own = FunAD(pretrained=False, progress=False, backbone=TINY["backbone"]).backbone
    grid, side, funad_cap, peer_cap = seen[0]
    assert side > own.preprocessing.image_size and grid[0] > own.grid[0]
    assert funad_cap == peer_cap == POOL_MAX_PATCHES * grid[0] * grid[1] // (own.grid[0] * own.grid[1])


# --------------------------------------------------------------------------- several datasets


def test_dataset_argument_is_a_root_or_root_colon_category(tmp_path):
    assert parse_dataset("data/mvtec:bottle") == (Path("data/mvtec"), "bottle")
    assert parse_dataset("data/magnetic_tile") == (Path("data/magnetic_tile"), None)
    assert parse_dataset(r"C:\data\mvtec") == (Path(r"C:\data\mvtec"), None)
    (tmp_path / "run:1").mkdir()
    assert parse_dataset(str(tmp_path / "run:1")) == (tmp_path / "run:1", None)


@pytest.fixture
def two_categories(demo_data, tmp_path):
    """``cats/masked`` (the demo dataset) and ``cats/unmasked`` (the same with image labels only)."""
    cats = tmp_path / "cats"
    shutil.copytree(demo_data.root, cats / "masked")
    shutil.copytree(demo_data.root, cats / "unmasked", ignore=shutil.ignore_patterns("ground_truth"))
    return cats


def test_benchmark_of_two_datasets_writes_one_summary_with_their_mean(two_categories, tmp_path, capsys,
                                                                      tiny_cli_flags):
    out = tmp_path / "results"
    # Both forms at once: ROOT:CATEGORY, and a category folder as its own root.
    assert main(["--quiet", "benchmark", f"{two_categories}:masked", str(two_categories / "unmasked"),
                 "--seeds", "0", "1", "--methods", "funad", "patchcore", "--out", str(out), "--no-cache",
                 *tiny_cli_flags]) == 0
    names = ("cats/masked", "unmasked")
    for name in names:
        results = json.loads((out / name / "results.json").read_text())
        assert results["dataset"]["name"] == name and results["complete"] is True
        assert len(list((out / name / "splits").iterdir())) == 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is True and list(summary["results"]) == list(names)
    rows = {(r["dataset"], r["setting"], r["method"]): r for r in summary["rows"]}
    assert set(rows) == {(d, s, m) for d in names for s in ("no-overlap", "overlap") for m in ("funad", "patchcore")}
    assert all(row["seeds"] == [0, 1] for row in rows.values())
    assert all("pixel_auroc" in row for key, row in rows.items() if key[0] == "cats/masked")
    assert not any("pixel_auroc" in row or "aupro" in row for key, row in rows.items() if key[0] == "unmasked")
    assert len(summary["means"]) == 4
    for mean in summary["means"]:
        per_dataset = [rows[(name, mean["setting"], mean["method"])] for name in names]
        for metric in ("image_auroc", "image_f1_max", "fit_seconds"):
            assert mean[metric]["mean"] == pytest.approx(np.mean([row[metric]["mean"] for row in per_dataset]))
            assert mean[metric]["datasets"] == list(names)
        for metric in ("pixel_auroc", "aupro"):  # over the dataset with masks only
            assert mean[metric] == {"mean": per_dataset[0][metric]["mean"], "datasets": ["cats/masked"]}
    table = (out / "summary.md").read_text()
    assert table.strip() == capsys.readouterr().out.strip()
    unmasked_row = next(line for line in table.splitlines() if line.startswith("| unmasked | 0.1 | overlap | funad |"))
    cells = [cell.strip() for cell in unmasked_row.split("|")[1:-1]]
    assert cells[5:7] == ["-", "-"] and "-" not in cells[4] + cells[7]  # no pixel AUROC or AUPRO
    assert table.count("| mean over datasets |") == 4
    assert "pixel AUROC and AUPRO only over the datasets with masks (cats/masked)" in table


def test_benchmark_refuses_two_datasets_of_one_name(two_categories, tmp_path):
    assert main(["--quiet", "benchmark", f"{two_categories}:masked", str(two_categories), "--category", "masked",
                 "--out", str(tmp_path / "results")]) == 1
    assert not (tmp_path / "results").exists()


def test_a_stopped_benchmark_keeps_the_datasets_it_finished(two_categories, tmp_path, monkeypatch, tiny_cli_flags):
    from funad.benchmark import runner

    fit_method = runner._fit_method

    def stop_on_the_second_dataset(method, split, train, options, peer_pool_cap):
        if split.category == "unmasked":
            raise RuntimeError("stopped")
        return fit_method(method, split, train, options, peer_pool_cap)

    monkeypatch.setattr(runner, "_fit_method", stop_on_the_second_dataset)
    out = tmp_path / "results"
    assert main(["--quiet", "benchmark", str(two_categories), "--category", "masked", "unmasked", "--methods",
                 "patchcore", "--out", str(out), "--no-cache", *tiny_cli_flags]) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is False
    assert {row["dataset"] for row in summary["rows"]} == {"cats/masked"}
    assert json.loads((out / "cats" / "masked" / "results.json").read_text())["complete"] is True
    assert not (out / "cats" / "unmasked" / "results.json").exists()
