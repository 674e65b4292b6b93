"""benchmarks/regions.py on tiny synthetic data: label-free masks' pixel F1/IoU next to the oracle."""

import json
import subprocess
import sys
from pathlib import Path

from conftest import TINY

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "regions.py"


def test_regions_benchmark_reports_f1_and_iou_next_to_the_oracle(demo_data, tmp_path):
    out = tmp_path / "regions.json"
    config = {k: v for k, v in TINY.items()}
    completed = subprocess.run([sys.executable, str(SCRIPT), "--data", str(demo_data.root), "--no-cache",
                                "--eval-size", "32", "--quantiles", "0.5", "0.99", "--config", json.dumps(config),
                                "--json", str(out)], capture_output=True, text=True, check=True, timeout=600)
    assert "oracle" in completed.stdout and "funad's" in completed.stdout
    results = json.loads(out.read_text())
    rows = results["label_free"]
    assert [row["quantile"] for row in rows] == [0.5, 0.99, 0.999] and [r["chosen"] for r in rows][-1]
    # a higher quantile gives a higher threshold; every score is a fraction (IoU <= F1)
    assert [row["threshold"] for row in rows] == sorted(row["threshold"] for row in rows)
    oracle = results["oracle"]
    assert all(0 <= row["iou"] <= row["f1"] <= 1 for row in rows) and 0 < oracle["f1"] <= 1
    assert results["test_images"] == 8 - 2  # two anomalies moved into training
