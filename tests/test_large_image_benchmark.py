"""benchmarks/large_image.py on a small photo: one peak-RSS line per case, the small copy's first."""

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "large_image.py"


def test_large_image_benchmark_prints_peak_rss_per_case():
    completed = subprocess.run([sys.executable, str(SCRIPT), "--size", "600x400"], capture_output=True, text=True,
                               check=True, timeout=600)
    assert "photo=600x400 (0.2 MP)" in completed.stdout
    peaks = dict(re.findall(r"case=(\S+) peak_rss_mb=(\d+)", completed.stdout))
    assert list(peaks) == ["small", "npy-original", "png-input"]
    assert all(100 < int(peak) < 10_000 for peak in peaks.values())  # MB: a Python process with torch
