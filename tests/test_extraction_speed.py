"""benchmarks/extraction_speed.py: one record per size and round, and the table keeps the fastest round."""

import json

import pytest

from conftest import benchmark_script


@pytest.fixture(scope="module")
def speed():
    return benchmark_script("extraction_speed")


def test_times_each_size_and_reports_its_grid(speed, demo_data, tmp_path, capsys):
    out = tmp_path / "speed.jsonl"
    assert speed.main([str(demo_data.root / "train"), "--sizes", "28", "56", "--count", "3", "--batch-size", "2",
                       "--repeats", "2", "--out", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["image_size"], r["grid"]) for r in records] == [(28, [2, 2]), (56, [4, 4])] * 2
    for record in records:
        assert record["images"] == 3 and record["wall_seconds"] > 0 and record["cpu_seconds"] >= 0
        assert record["images_per_second"] == pytest.approx(3 / record["wall_seconds"])
    table = capsys.readouterr().out.strip().splitlines()
    assert len(table) == 2 + 2 and table[2].startswith("| 28 | 2x2 | 3 |") and table[3].startswith("| 56 | 4x4 |")


def test_table_keeps_the_fastest_round(speed):
    def record(wall):
        return {"image_size": 224, "grid": [16, 16], "images": 10, "wall_seconds": wall, "images_per_second": 10 / wall,
                "cpu_seconds_per_image": 0.2, "load_average_before": 1.0, "load_average_after": 2.0}

    row = speed.table([record(2.0), record(1.0), record(4.0)]).splitlines()[2]
    assert row == "| 224 | 16x16 | 10 | 10.00 | 0.200 | 1.00, 2.00 |"
