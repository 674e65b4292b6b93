"""benchmarks/semantic_toy.py: the paper's one-class-normal split, and a run end to end on a few digits."""

import json

import numpy as np
import pytest

from conftest import TINY, benchmark_script


@pytest.fixture(scope="module")
def toy():
    return benchmark_script("semantic_toy")


def test_one_digit_is_normal_the_others_contaminate_at_the_ratio_and_test_images_never_train(toy):
    targets = np.repeat(np.arange(10), 30)
    split = toy.toy_split(targets, digit=3, seed=0, contamination=0.1)
    assert len(split.train_normal) == 18 and (targets[split.train_normal] == 3).all()
    assert len(split.contaminants) == 2 and (targets[split.contaminants] != 3).all()
    assert not set(split.train) & set(split.test)
    assert len(split.test) == len(targets) - len(split.train)  # every image not in training is tested
    np.testing.assert_array_equal(split.test_labels, targets[split.test] != 3)
    again = toy.toy_split(targets, digit=3, seed=0, contamination=0.1)
    np.testing.assert_array_equal(again.train, split.train)
    assert not np.array_equal(toy.toy_split(targets, digit=3, seed=1, contamination=0.1).train, split.train)


def test_runs_end_to_end_on_a_few_digits(toy, tmp_path, capsys):
    out = tmp_path / "toy.jsonl"
    toy.main(["--data", str(tmp_path / "digits"), "--out", str(out), "--digits", "0", "7", "--per-digit", "12",
              "--pixels", "16", "--random-weights", "--backbone", TINY["backbone"],
              "--image-size", str(TINY["image_size"]), "--epochs", "1"])
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [record["digit"] for record in records] == [0, 7]
    for record in records:
        assert record["train_images"] == 7 + 1 and record["contaminants"] == 1 and record["test_images"] == 120 - 8
        assert all(0.0 <= record[key] <= 1.0 for key in toy.METHODS + toy.LABELS)
    assert "| funad_label_recall |" in capsys.readouterr().out
    assert "CC BY 4.0" in (tmp_path / "digits" / "readme.txt").read_text()
    assert len(list((tmp_path / "digits" / "16px").rglob("*.png"))) == 120
