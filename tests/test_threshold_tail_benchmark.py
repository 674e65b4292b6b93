"""benchmarks/threshold_tail.py: label quality per width, and a run end to end on the demo data."""

import json

import numpy as np
import pytest

from conftest import TINY, benchmark_script


@pytest.fixture(scope="module")
def tail():
    return benchmark_script("threshold_tail")


def test_label_quality_counts_flagged_anomalies_and_good_images(tail):
    scores, labels = np.array([0.1, 0.5, 0.9, 0.2, 0.8, 0.95]), np.array([0, 0, 0, 1, 1, 1])
    quality = tail.label_quality(scores, labels, threshold=0.6)
    assert quality == pytest.approx({"recall": 2 / 3, "false_alarm_rate": 1 / 3, "balanced_accuracy": 2 / 3})


def test_runs_end_to_end_and_wider_tails_never_flag_more(tail, demo_data, tmp_path, capsys):
    out = tmp_path / "tail.jsonl"
    flags = [f"--{name.replace('_', '-')}={value}" for name, value in TINY.items() if name != "batch_size_extract"]
    tail.main([str(demo_data.root), "--seeds", "0", "--widths", "1", "3", "--out", str(out), "--random-weights",
               *flags])
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert {(r["width"], r["setting"]) for r in records} == {(w, s) for w in (1, 3) for s in ("no-overlap", "overlap")}
    by = {(r["width"], r["setting"]): r for r in records}
    for setting in ("no-overlap", "overlap"):
        narrow, wide = by[(1, setting)], by[(3, setting)]
        assert wide["recall"] <= narrow["recall"] and wide["false_alarm_rate"] <= narrow["false_alarm_rate"]
    assert "| width |" in capsys.readouterr().out
    tail.main(["--summary", str(out)])
    rows = capsys.readouterr().out.strip().splitlines()[2:]  # after the header and its rule
    assert len(rows) == 2 * 2 and all(row.endswith("| 1 / 0 |") or row.endswith("| 0 / 1 |") for row in rows)
