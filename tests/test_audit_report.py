"""Label-free threshold end to end: predict labels, `funad audit`, `funad report`."""

import html
import json
import re
import shutil

import numpy as np
import pytest

from funad.cli import main
from funad.model import FunAD

from conftest import TINY


@pytest.fixture(scope="module")
def fitted(demo_data, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("audit") / "model"
    model = FunAD(cache_dir=False, progress=False, pretrained=False, **TINY).fit(demo_data.train_dir)
    model.save(model_dir)
    return model, model_dir


def test_threshold_is_saved_and_labels_follow_it(fitted, demo_data):
    model, model_dir = fitted
    assert np.isfinite(model.threshold_) and 0.0 <= model.contamination_ <= 1.0
    assert model.contamination_ == pytest.approx(np.mean(model.train_predict_scores_ > model.threshold_))
    loaded = FunAD.load(model_dir)
    assert loaded.threshold_ == pytest.approx(model.threshold_)
    assert loaded.contamination_ == pytest.approx(model.contamination_)
    np.testing.assert_array_equal(loaded.label([model.threshold_, model.threshold_ + 1e-3]), [False, True])


def test_knn_threshold_is_in_knn_units(demo_data):
    # A bank small enough that some training images have no entry in it (the default's 20 % reaches all).
    model = FunAD(cache_dir=False, progress=False, pretrained=False, scorer="knn", knn_patch_fraction=0.05,
                  **TINY).fit(demo_data.train_dir)
    banked = np.zeros(len(model.train_paths_), dtype=bool)
    banked[np.unique(model.scorer_.bank_.image_ids)] = True  # the images with patches in the bank
    assert banked.any() and not banked.all()
    plain = model.score(model.train_paths_)
    # images outside the bank score exactly as predict scores them ...
    np.testing.assert_allclose(model.train_predict_scores_[~banked], plain[~banked], rtol=1e-3)
    # ... banked ones without their own entries, which can only move them further from the bank
    assert (model.train_predict_scores_[banked] >= plain[banked] * (1 - 1e-3)).all()
    assert (model.train_predict_scores_[banked] > plain[banked] * (1 + 1e-2)).any()


def test_predict_labels_audit_and_report(fitted, demo_data, tmp_path, read_csv):
    _, model_dir = fitted
    out = tmp_path / "pred"
    assert main(["--quiet", "predict", str(model_dir), str(demo_data.test_dir), "--out", str(out), "--report"]) == 0
    rows = read_csv(out / "scores.csv")
    assert list(rows[0]) == ["path", "score", "label", "threshold", "heatmap", "map", "error"]
    threshold = float(rows[0]["threshold"])
    assert all((r["label"] == "anomalous") == (float(r["score"]) > threshold) for r in rows)
    assert json.loads((out / "prediction.json").read_text())["model"] == str(model_dir.resolve())

    override = tmp_path / "override"
    assert main(["--quiet", "predict", str(model_dir), str(demo_data.test_dir), "--out", str(override),
                 "--threshold", "-1"]) == 0
    assert {r["label"] for r in read_csv(override / "scores.csv")} == {"anomalous"}

    audit = tmp_path / "audit"
    assert main(["--quiet", "audit", str(model_dir), "--out", str(audit)]) == 0
    audit_rows = read_csv(audit / "audit.csv")
    assert list(audit_rows[0]) == ["path", "score", "suspected"]
    scores = [float(r["score"]) for r in audit_rows]
    assert scores == sorted(scores, reverse=True) and len(scores) == 20
    assert all((r["suspected"] == "True") == (float(r["score"]) > threshold) for r in audit_rows)
    suspected = sum(r["suspected"] == "True" for r in audit_rows)
    assert len(list((audit / "heatmaps").rglob("*.png.jpg"))) == suspected

    report = (out / "report.html").read_text()
    # predictions: image + heatmap each; one histogram; the suspected training images
    assert report.count("<img") == 2 * len(rows) + 1 + suspected
    assert report.count('src="data:image/') == report.count("<img")
    assert "No ground truth given" in report


def test_audit_and_report_work_from_another_folder(demo_data, tmp_path, monkeypatch, capsys):
    """A model fitted on a relative path finds its training images from any working folder."""
    work = tmp_path / "work"
    shutil.copytree(demo_data.train_dir, work / "train")
    monkeypatch.chdir(work)
    model = FunAD(cache_dir=False, progress=False, pretrained=False, **TINY).fit("train")
    assert all(path.is_absolute() and path.is_relative_to(work / "train") for path in model.train_paths_)
    model.save(work / "model")
    predictions = work / "pred"
    assert main(["--quiet", "predict", "model", str(demo_data.test_dir), "--out", str(predictions)]) == 0

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["audit", str(work / "model"), "--out", "audit", "--threshold", "-1"]) == 0
    assert "no longer exists" not in capsys.readouterr().err
    assert len(list((elsewhere / "audit" / "heatmaps").rglob("*.png.jpg"))) == 20
    assert main(["--quiet", "report", str(predictions), "--out", "report.html"]) == 0
    assert "missing:" not in (elsewhere / "report.html").read_text()


def test_audit_of_a_moved_training_folder(fitted, demo_data, tmp_path, capsys):
    _, model_dir = fitted
    moved = tmp_path / "moved"
    shutil.copytree(demo_data.train_dir, moved)
    model = FunAD.load(model_dir)
    changed, removed = moved / model.train_paths_[1].name, moved / model.train_paths_[0].name
    removed.unlink()
    changed.write_bytes(changed.read_bytes() + b"\0")  # same name, other content
    out = tmp_path / "audit"
    assert main(["audit", str(model_dir), "--out", str(out), "--threshold", "-1", "--train-root", str(moved)]) == 0
    warnings = capsys.readouterr().err
    assert f"{removed} no longer exists" in warnings
    assert f"{changed} differs from the image the model was trained on" in warnings
    assert len(list((out / "heatmaps").rglob("*.png.jpg"))) == 18


def test_report_with_ground_truth_and_escaping(fitted, demo_data, tmp_path):
    _, model_dir = fitted
    # an image whose name needs escaping, in MVTec layout with its mask
    defect = next(p for p in demo_data.test_paths if p in demo_data.test_masks)
    test_dir = tmp_path / "test"
    shutil.copytree(demo_data.test_dir, test_dir)
    odd_name = 'a<b>&"c'
    shutil.copy(defect, test_dir / "defect" / f"{odd_name}.png")
    ground_truth = tmp_path / "ground_truth"
    shutil.copytree(demo_data.root / "ground_truth", ground_truth)
    shutil.copy(demo_data.test_masks[defect], ground_truth / "defect" / f"{odd_name}_mask.png")
    out = tmp_path / "pred"
    assert main(["--quiet", "predict", str(model_dir), str(test_dir), "--out", str(out)]) == 0
    report_path = tmp_path / "r" / "report.html"
    assert main(["--quiet", "report", str(out), "--ground-truth", str(ground_truth), "--out", str(report_path)]) == 0
    report = report_path.read_text()
    assert odd_name not in report and html.escape(odd_name) in report
    for metric in ("image AUROC", "pixel AUROC", "f1 at the threshold"):
        value = re.search(rf"<th>{metric}</th><td>([0-9.]+)</td>", report)
        assert value and 0.0 <= float(value.group(1)) <= 1.0


def test_report_of_a_folder_that_is_not_one(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 1
    assert "scores.csv is missing" in capsys.readouterr().err


def test_report_names_a_ground_truth_that_is_a_file(fitted, demo_data, tmp_path, capsys):
    _, model_dir = fitted
    out, a_file = tmp_path / "pred", tmp_path / "masks.zip"
    a_file.write_bytes(b"")
    assert main(["--quiet", "predict", str(model_dir), str(demo_data.test_dir), "--out", str(out)]) == 0
    assert main(["report", str(out), "--ground-truth", str(a_file)]) == 1
    assert f"ground-truth folder {a_file} is not a folder" in capsys.readouterr().err


def _cut_scores(text: str) -> str:
    header, first, *_ = text.splitlines()
    return f"{header}\n{first.split(',')[0]},0.5\n"  # the second row cut after its score


@pytest.mark.parametrize("name, corrupt, message", [
    ("prediction.json", lambda text: "", "prediction.json: not a prediction description"),
    ("prediction.json", lambda text: "[]", "not a JSON object"),
    ("prediction.json", lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "model"}),
     "no model recorded"),
    ("prediction.json", lambda text: json.dumps({**json.loads(text), "threshold": "x"}), "prediction.json"),
    ("scores.csv", _cut_scores, "line 2: the row is cut short (no threshold)"),
    ("scores.csv", lambda text: "\x89PNG\x00\xff\xfe", "scores.csv: not a UTF-8 text file"),
])
def test_report_of_a_damaged_prediction_folder_names_the_file(fitted, demo_data, tmp_path, capsys, name, corrupt,
                                                               message):
    _, model_dir = fitted
    out = tmp_path / "pred"
    assert main(["--quiet", "predict", str(model_dir), str(demo_data.test_dir), "--out", str(out)]) == 0
    target = out / name
    damaged = corrupt(target.read_text())
    target.write_bytes(damaged.encode("latin-1"))
    capsys.readouterr()
    assert main(["report", str(out)]) == 1
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error


def test_report_shows_no_suspects_of_a_model_refitted_since_the_predictions(fitted, demo_data, tmp_path):
    from funad.reports.html import write_report

    _, model_dir = fitted
    model_copy, out = tmp_path / "model", tmp_path / "pred"
    shutil.copytree(model_dir, model_copy)
    assert main(["--quiet", "predict", str(model_copy), str(demo_data.test_dir), "--out", str(out)]) == 0
    assert "training images score above the threshold" in write_report(out).read_text()
    # fit again into the same folder: another seed, another model under the same path
    shutil.rmtree(model_copy)
    FunAD(cache_dir=False, progress=False, pretrained=False, **{**TINY, "seed": 1}).fit(
        demo_data.train_dir).save(model_copy)
    page = write_report(out).read_text()
    assert "training images score above the threshold" not in page
    assert "is not the one these predictions were made with" in page


def test_report_of_an_exported_model_says_why_it_has_no_training_section(fitted, demo_data, tmp_path, capsys):
    from funad.reports.html import write_report

    _, model_dir = fitted
    export = ["--quiet", "export", str(model_dir), "--out", str(tmp_path / "model.onnx")]
    assert main(export) == 0
    assert main(export) == 1  # an existing file is replaced only when asked
    assert "model.onnx already exists: pass --overwrite" in capsys.readouterr().err
    assert main([*export, "--overwrite"]) == 0
    assert main(["--quiet", "predict", str(tmp_path / "model.onnx"), str(demo_data.test_dir),
                 "--out", str(tmp_path / "pred")]) == 0
    assert "which carries no training images" in write_report(tmp_path / "pred").read_text()


def test_auditing_again_replaces_the_earlier_audits_heatmaps(fitted, tmp_path, read_csv, capsys):
    _, model_dir = fitted
    audit = tmp_path / "audit"
    assert main(["--quiet", "audit", str(model_dir), "--out", str(audit), "--threshold", "-1"]) == 0
    assert len(list((audit / "heatmaps").rglob("*.png.jpg"))) == 20
    assert main(["--quiet", "audit", str(model_dir), "--out", str(audit)]) == 0  # the model's own threshold
    suspected = sum(row["suspected"] == "True" for row in read_csv(audit / "audit.csv"))
    assert suspected < 20
    assert len(list((audit / "heatmaps").rglob("*.png.jpg"))) == suspected


def test_audit_refuses_a_folder_holding_a_prediction(fitted, demo_data, tmp_path, capsys):
    _, model_dir = fitted
    out = tmp_path / "pred"
    assert main(["--quiet", "predict", str(model_dir), str(demo_data.test_dir), "--out", str(out)]) == 0
    heatmaps = sorted((out / "heatmaps").rglob("*"))
    assert main(["--quiet", "audit", str(model_dir), "--out", str(out), "--threshold", "-1"]) == 1
    assert "holds a prediction" in capsys.readouterr().err
    assert sorted((out / "heatmaps").rglob("*")) == heatmaps and not (out / "audit.csv").exists()


def test_outputs_that_cannot_be_written_are_one_line_naming_them(fitted, demo_data, tmp_path, capsys):
    _, model_dir = fitted
    folder, a_file = tmp_path / "a folder", tmp_path / "a file"
    folder.mkdir()
    a_file.write_text("")
    predictions = tmp_path / "pred"
    assert main(["--quiet", "predict", str(model_dir), str(demo_data.test_dir), "--out", str(predictions)]) == 0
    capsys.readouterr()
    for command, named in [(["report", str(predictions), "--out", str(folder)], f"Is a directory: {folder}"),
                           (["export", str(model_dir), "--out", str(folder), "--overwrite"],
                            f"Is a directory: {folder}"),
                           (["audit", str(model_dir), "--out", str(a_file / "audit")],
                            f"Not a directory: {a_file / 'audit'}")]:
        assert main(["--quiet", *command]) == 1
        error = capsys.readouterr().err
        assert named in error and "Traceback" not in error and ".tmp" not in error, command
