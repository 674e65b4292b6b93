"""The command line's output contract: files, columns, shapes."""

import numpy as np
from PIL import Image

from funad.cli import main


def test_fit_then_predict(demo_data, tmp_path, tiny_cli_flags, read_csv):
    model_dir = tmp_path / "model"
    assert main(["--quiet", "fit", str(demo_data.train_dir), "--out", str(model_dir), "--no-cache",
                 *tiny_cli_flags]) == 0
    assert (model_dir / "model.safetensors").exists()

    # two inputs with the same file name in different folders must not overwrite each other
    for folder in ("line_a", "line_b"):
        (tmp_path / folder).mkdir()
        Image.open(demo_data.test_paths[0]).resize((40, 24)).save(tmp_path / folder / "part.png")
    out = tmp_path / "out"
    unreadable = tmp_path / "unreadable.png"
    unreadable.write_bytes(b"not an image")
    inputs = [str(tmp_path / "line_a"), str(tmp_path / "line_b" / "part.png"), str(unreadable),
              str(demo_data.test_paths[1])]
    assert main(["--quiet", "predict", str(model_dir), *inputs, "--out", str(out)]) == 0

    rows = read_csv(out / "scores.csv")
    assert list(rows[0]) == ["path", "score", "label", "threshold", "heatmap", "map", "error"]
    assert [r["path"] for r in rows][2] == str(unreadable) and len(rows) == 4  # one row per input, in order
    assert rows[2]["error"] and rows[2]["score"] == "nan" and not rows[2]["map"]
    rows = [r for i, r in enumerate(rows) if i != 2]
    assert all(np.isfinite(float(r["score"])) and not r["error"] for r in rows)
    maps = sorted((out / "maps").rglob("*.npy"))
    heatmaps = sorted((out / "heatmaps").rglob("*.png"))
    assert len(maps) == 3 and len(heatmaps) == 3
    part_maps = [np.load(m) for m in maps if m.stem == "part"]
    assert len(part_maps) == 2 and all(m.shape == (24, 40) and m.dtype == np.float32 for m in part_maps)
    assert Image.open(next(h for h in heatmaps if h.stem == "part")).size == (40, 24)


def test_bad_input_is_an_error_not_a_traceback(tmp_path, capsys):
    assert main(["fit", str(tmp_path / "missing"), "--out", str(tmp_path / "m")]) == 1
    assert "missing" in capsys.readouterr().err
