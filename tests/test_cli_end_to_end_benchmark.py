"""benchmarks/cli_end_to_end.py on a tiny split: fit (with the tiny settings passed on), predict and audit run, and
the JSON it prints counts the split's images, reads the fitted threshold and scores both settings (no timing is
checked)."""

import json
import os

import pytest

from conftest import benchmark_script


def test_runs_the_commands_and_reports_the_split(demo_data, tmp_path, tiny_cli_flags, read_csv, capsys, monkeypatch):
    from funad.benchmark.datasets import load_dataset
    from funad.benchmark.protocol import make_split

    monkeypatch.chdir(demo_data.root.parent)  # the split names its images relative to here, as a user's may
    split = make_split(load_dataset(demo_data.root.name), 0.1, 0).save(tmp_path / "splits")  # 2 anomalies moved
    work = tmp_path / "e2e"
    benchmark_script("cli_end_to_end").main([str(split), "--work", str(work), *tiny_cli_flags])
    result = json.loads(capsys.readouterr().out)

    config = json.loads((work / "model" / "model.json").read_text())["estimator"]["config"]
    assert (config["backbone"], config["image_size"]) == ("efficientnet_lite0", 64)  # the flags reached funad fit
    assert (result["training_images"], result["planted_anomalies"]) == (20 + 2, 2)
    assert all(isinstance(result[key], float) for key in ("fit_seconds", "predict_seconds",
                                                          "predict_images_per_second"))
    assert 0.0 <= result["estimated_contamination"] <= 1.0
    scores = read_csv(work / "pred" / "scores.csv")
    assert len(scores) == 8  # the whole test set: the overlap setting's
    assert all(float(row["threshold"]) == pytest.approx(result["threshold"], rel=1e-6) for row in scores)
    assert (work / "pred" / "report.html").is_file()
    audit = read_csv(work / "audit" / "audit.csv")
    assert len(audit) == 22 and result["audit_suspected"] == sum(row["suspected"] == "True" for row in audit)
    moved = {os.path.abspath(item["path"]) for item in json.loads(split.read_text())["train"] if item["moved"]}
    assert result["audit_precision_at_n"] == sum(row["path"] in moved for row in audit[:2]) / 2
    for setting in ("no-overlap", "overlap"):
        metrics = result[setting]
        assert set(metrics) == {"precision", "recall", "f1", "false_alarm_rate", "image_auroc"}
        assert all(0.0 <= value <= 1.0 for value in metrics.values())
