"""benchmarks/speed.py on tiny data, every section: it prints its ratios and start-up times (no timing is checked)."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "speed.py"


def test_speed_benchmark_prints_the_cli_ratio_and_start_up_times(demo_data, tmp_path, tiny_cli_flags):
    data = tmp_path / "category"  # the MVTec AD layout the script reads: train/good, test/<type>
    shutil.copytree(demo_data.train_dir, data / "train" / "good")
    shutil.copytree(demo_data.test_dir, data / "test")
    completed = subprocess.run([sys.executable, str(SCRIPT), "--data", str(data), "--repeats", "1", "--workers", "0",
                                "--predict-images", "4", "--faithful-iterations", "1", "--growth", "8,16",
                                "--cli-few", "2", "--cli-variants", "--heatmap-format png", "--cli-image-size", "96",
                                *tiny_cli_flags],
                               capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr
    out = completed.stdout
    for section in ("## fit", "## faithful schedule", "## predict", "## training cost per epoch", "## start-up",
                    "## funad predict vs the bare backbone"):
        assert section in out
    assert "the first 96 x 96 px" in out  # --cli-image-size: the scaled copies are scored
    startup = dict(re.findall(r"\| (funad --help|funad --version|import funad.cli|funad predict, 1 image, [\w .]+) "
                              r"\| [\d.]+ \| [\d.]+ \| (\d+) \|", out))
    assert len(startup) == 5
    directory, onnx = (int(startup[f"funad predict, 1 image, {name}"]) for name in ("model directory",
                                                                                 "exported model.onnx"))
    assert int(startup["funad --help"]) < 200 < directory  # MB: no torch for --help
    assert onnx < directory  # no torch for the exported model either
    number = r"-?[\d.]+"  # a round's ratio over 2 tiny images can come out negative
    marginal = r"(?:[\d.]+|—)"  # '—' where the logged seconds cannot tell 4 tiny images from 2
    for model in ("model directory", "exported model.onnx"):
        # best bare, best marginal, their ratio, the median round ratio (per CPU s), the one round's ratio
        assert re.search(rf"\n\| {model} \| --heatmap-format png \| [\d.]+ \| {marginal} \| \*\*{marginal}\*\* "
                         rf"\| {number} \({number}\) \| {number} \|", out)
