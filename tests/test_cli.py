"""The command line's output contract: files, columns, shapes."""

from pathlib import Path

import numpy as np
from PIL import Image

from funad.cli import main


def test_fit_then_predict(demo_data, tmp_path, tiny_cli_flags, read_csv, capsys):
    model_dir = tmp_path / "model"
    assert main(["--quiet", "fit", str(demo_data.train_dir), "--out", str(model_dir), "--no-cache",
                 *tiny_cli_flags]) == 0
    assert (model_dir / "model.safetensors").exists()
    # a second fit into the same folder is refused before any work
    assert main(["--quiet", "fit", str(demo_data.train_dir), "--out", str(model_dir), "--no-cache"]) == 1
    assert "already exists" in capsys.readouterr().err and (model_dir / "model.safetensors").exists()

    # two inputs with the same file name in different folders, or the same stem in one folder,
    # must not overwrite each other
    for folder in ("line_a", "line_b"):
        (tmp_path / folder).mkdir()
        Image.open(demo_data.test_paths[0]).resize((40, 24)).save(tmp_path / folder / "part.png")
    Image.open(demo_data.test_paths[2]).resize((40, 24)).save(tmp_path / "line_a" / "part.jpg")
    out = tmp_path / "out"
    unreadable = tmp_path / "unreadable.png"
    unreadable.write_bytes(b"not an image")
    inputs = [str(tmp_path / "line_a"), str(tmp_path / "line_b" / "part.png"), str(unreadable),
              str(demo_data.test_paths[1])]
    assert main(["--quiet", "predict", str(model_dir), *inputs, "--out", str(out)]) == 0

    rows = read_csv(out / "scores.csv")
    assert list(rows[0]) == ["path", "score", "label", "threshold", "heatmap", "map", "error"]
    assert [r["path"] for r in rows][3] == str(unreadable) and len(rows) == 5  # one row per input, in order
    assert rows[3]["error"] and rows[3]["score"] == "nan" and not rows[3]["map"]
    rows = [r for i, r in enumerate(rows) if i != 3]
    assert all(np.isfinite(float(r["score"])) and not r["error"] for r in rows)
    # every input has its own outputs, named by its full file name under its folder
    assert len({r["map"] for r in rows}) == len({r["heatmap"] for r in rows}) == 4
    by_name = {Path(r["path"]).relative_to(tmp_path).as_posix(): r for r in rows if "line_" in r["path"]}
    # (relative to the inputs' common folder, which here is above tmp_path)
    assert by_name["line_a/part.jpg"]["map"].endswith(f"{tmp_path.name}/line_a/part.jpg.npy")
    assert by_name["line_a/part.png"]["map"].endswith(f"{tmp_path.name}/line_a/part.png.npy")
    assert by_name["line_a/part.png"]["heatmap"].endswith(f"{tmp_path.name}/line_a/part.png.jpg")
    assert sorted(p.relative_to(out).as_posix() for p in (out / "maps").rglob("*.npy")) == sorted(
        r["map"] for r in rows)
    for row in by_name.values():
        anomaly_map = np.load(out / row["map"])
        assert anomaly_map.shape == (24, 40) and anomaly_map.dtype == np.float32
        assert anomaly_map.max() <= float(row["score"]) + 1e-6  # the map is this row's own
        assert Image.open(out / row["heatmap"]).size == (40, 24)
    jpg, png = (np.load(out / by_name[f"line_a/part.{kind}"]["map"]) for kind in ("jpg", "png"))
    assert not np.array_equal(jpg, png)


def test_a_fit_says_what_its_long_stages_do(demo_data, tmp_path, tiny_cli_flags, capsys):
    """The scorer's stages take minutes on large folders and show no bar; faiss's loading and a lone rank's
    count are noise."""
    import logging

    assert main(["fit", str(demo_data.train_dir), "--out", str(tmp_path / "model"), "--no-cache",
                 *tiny_cli_flags]) == 0
    log = capsys.readouterr().err
    stages = ["the bank: a greedy coreset of", "floors: how near other training images come to each of",
              "floors: kept for the highest-scoring 50 % of the 20 training images", "label-free threshold"]
    assert all(stage in log for stage in stages), log
    assert [log.index(stage) for stage in stages] == sorted(log.index(stage) for stage in stages)
    assert "world_size=1" not in log and logging.getLogger("faiss.loader").level == logging.WARNING


def test_predict_on_no_images_is_a_usage_error(demo_data, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    model = tmp_path / "model"  # a model's files (found before the images are looked for; read only after)
    model.mkdir()
    for name in ("model.json", "model.safetensors"):
        (model / name).write_text("")
    assert main(["predict", str(model), str(empty), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert str(empty) in error and "no image files" in error
    assert not (tmp_path / "out").exists()


def test_fit_on_no_images_is_a_usage_error_as_predicts_is(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    assert main(["fit", str(empty), "--out", str(tmp_path / "model")]) == 2
    error = capsys.readouterr().err
    assert str(empty) in error and "no image files" in error and ".png" in error
    assert not (tmp_path / "model").exists()


def test_bad_input_is_an_error_not_a_traceback(tmp_path, capsys):
    assert main(["fit", str(tmp_path / "missing"), "--out", str(tmp_path / "m")]) == 1
    error = capsys.readouterr().err
    assert f"no such file or folder: {tmp_path / 'missing'}" in error and "Errno" not in error
