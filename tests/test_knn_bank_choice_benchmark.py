"""benchmarks/knn_bank_choice.py on two tiny splits: one row per bank choice, AUROCs that parse, and per split the
planted anomalies among the bank's images, nested as the shares of lowest-scoring images grow."""

import re

import pytest

from conftest import TINY, benchmark_script

ROW = re.compile(r"\| (.+) \| ([\d.]+) \| ([\d.]+) \| (\d+ / \d+) \|")


@pytest.fixture(scope="module")
def bank_choice():
    return benchmark_script("knn_bank_choice")


@pytest.fixture
def splits(demo_data, tmp_path):
    """Two splits of the demo dataset as `funad benchmark` writes them, 2 test anomalies moved into training each."""
    from funad.benchmark.datasets import load_dataset
    from funad.benchmark.protocol import make_split

    dataset = load_dataset(demo_data.root)
    return [make_split(dataset, 0.1, seed).save(tmp_path / "splits") for seed in (0, 1)]


def test_one_row_per_bank_choice_over_both_splits(bank_choice, splits, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FUNAD_CACHE_DIR", str(tmp_path / "cache"))  # not the user's feature cache
    flags = [f"--{name.replace('_', '-')}={value}" for name, value in TINY.items()]
    bank_choice.main([*map(str, splits), *flags])
    header, rule, *lines = capsys.readouterr().out.strip().splitlines()
    assert header.startswith("| bank | image AUROC | pixel AUROC |") and rule == "|---|---|---|---|"
    rows = [ROW.fullmatch(line) for line in lines]
    assert all(rows), lines
    assert [row[1] for row in rows] == list(bank_choice.CHOICES)
    planted = {}
    for row in rows:
        assert 0.0 <= float(row[2]) <= 100.0 and 0.0 <= float(row[3]) <= 100.0
        planted[row[1]] = [int(count) for count in row[4].split(" / ")]
        assert all(0 <= count <= 2 for count in planted[row[1]])  # of the 2 moved into each split's training
    # The same images whatever the patch sampling; a larger share of the lowest-scoring images holds the smaller.
    assert planted["lowest 50%, coreset 1%"] == planted["lowest 50%, coreset 10%"] == planted["lowest 50%, random 10%"]
    for split in range(2):
        assert (planted["lowest 40%, coreset 1%"][split] <= planted["lowest 50%, coreset 1%"][split]
                <= planted["lowest 60%, coreset 1%"][split])
