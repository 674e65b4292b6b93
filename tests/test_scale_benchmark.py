"""benchmarks/scale.py on tiny synthetic sizes: one line per stage and size, then the growth per 10x."""

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "scale.py"
STAGES = ["cache_write", "cache_open", "bank_rebuild", "epoch_iterations", "knn_fit", "training_scores",
          "threshold", "pixel_threshold", "predict_scoring"]


def test_scale_benchmark_prints_every_stage_at_every_size():
    completed = subprocess.run([sys.executable, str(SCRIPT), "--sizes", "20", "40", "--patches", "16", "--dim", "8",
                                "--max-iterations", "1", "--max-scored-images", "10"],
                               capture_output=True, text=True, check=True, timeout=600)
    rows = re.findall(r"^stage=(\S+) images=(\d+) seconds=([\d.]+) peak_rss_mb=(\d+)", completed.stdout, re.M)
    assert [(stage, int(images)) for stage, images, _, _ in rows] == [(s, n) for n in (20, 40) for s in STAGES]
    assert all(50 < int(peak) < 10_000 for *_, peak in rows)  # MB: a Python process with torch
    growth = re.findall(r"^growth stage=\S+ images=20->40 per_10x=[\d.]+ .*per_image_per_doubling=[\d.]+",
                        completed.stdout, re.M)
    assert len(growth) == len(STAGES)
