"""benchmarks/approximate_search.py on a tiny feature cache: one line per bank size and nprobe, in order, whose
numbers parse, and recall@1 against exact search reaching 1 once every cell is probed (no timing is checked)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "approximate_search.py"
LINE = re.compile(r"keys=(\d+) exact_s=([\d.]+) ivf_build_s=([\d.]+) nprobe=(\d+) ivf_s=([\d.]+) "
                  r"speedup=([\d.]+) recall1=([\d.]+)")


@pytest.fixture(scope="module")
def feature_cache(demo_data, tmp_path_factory):
    """One backbone's folder of a feature cache, as `funad fit` leaves it, holding the demo's 28 images
    (at 128 px the CNN's grid is 16 x 16: 256 patches an image)."""
    from funad import FunAD

    model = FunAD(cache_dir=tmp_path_factory.mktemp("cache"), progress=False, **(TINY | {"image_size": 128}))
    images = sorted(demo_data.train_dir.glob("*.png")) + list(demo_data.test_paths)
    assert model.extract(images).grid == (16, 16)
    folder = model.feature_cache_folder()
    assert folder is not None and len(list(folder.glob("*.patches.npy"))) == len(images) == 28
    return folder


def run(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *arguments], capture_output=True, text=True, timeout=300)


def test_one_line_per_bank_size_and_nprobe(feature_cache):
    # 2 048 keys get 52 k-means cells (39 keys a cell at least): nprobe 64 searches them all, so exhaustively.
    completed = run(str(feature_cache), "--sizes", "1024", "2048", "--queries", "512", "--nprobe", "1", "64",
                    "--repeats", "1", "--threads", "2")
    assert completed.returncode == 0, completed.stderr
    out = completed.stdout.strip().splitlines()
    assert out[0].startswith("load average ") and out[0].endswith("queries 512, dim 152")
    assert out[-1].startswith("load average ")
    results = [LINE.fullmatch(line) for line in out[1:-1]]
    assert all(results), out
    assert [(int(m[1]), int(m[4])) for m in results] == [(1024, 1), (1024, 64), (2048, 1), (2048, 64)]
    recall = {(int(m[1]), int(m[4])): float(m[7]) for m in results}
    assert all(0.0 <= value <= 1.0 for value in recall.values())
    # Every cell probed: the exact neighbour (but for a float near-tie, one query of the 512 at most).
    assert recall[(1024, 64)] >= 0.998 and recall[(2048, 64)] >= 0.998
    assert recall[(2048, 1)] < 1.0  # one cell of 52 misses some


def test_too_small_a_cache_is_refused_by_name(feature_cache):
    # 64 Ki keys and 8 Ki queries take 288 images' patches; the cache holds 28.
    completed = run(str(feature_cache), "--sizes", "65536", "--repeats", "1")
    assert completed.returncode != 0
    assert f"{feature_cache} holds 28 images' features, 288 are needed" in completed.stderr
