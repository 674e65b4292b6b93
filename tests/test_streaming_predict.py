"""`funad predict` writes rows as it goes, and `--resume` finishes a stopped run: every image exactly once."""

import os
import shutil

import pytest

from funad.cli import main
from funad.model import FunAD

from conftest import TINY


@pytest.fixture(scope="module")
def model_dir(demo_data, tmp_path_factory):
    directory = tmp_path_factory.mktemp("streaming") / "model"
    FunAD(cache_dir=False, progress=False, pretrained=False, **TINY).fit(demo_data.train_dir).save(directory)
    return directory


def _crash_after(monkeypatch, count: int, predicted: list[int]) -> None:
    """FunAD.predict yields ``count`` predictions, then fails as a killed backbone would; the number of
    images each call is asked for goes to ``predicted``."""
    original = FunAD.predict

    def predict(self, images, **options):
        images = list(images)
        predicted.append(len(images))
        for number, prediction in enumerate(original(self, images, **options)):
            if number == count:
                raise RuntimeError("simulated crash")
            yield prediction

    monkeypatch.setattr(FunAD, "predict", predict)


def _predict(model_dir, images, out, *options) -> int:
    # --threshold -1: every image anomalous, so each has the regions its map has
    return main(["--quiet", "predict", str(model_dir), str(images), "--out", str(out), "--threshold", "-1", *options])


def test_a_stopped_predict_keeps_its_rows_and_resume_scores_each_image_once(model_dir, demo_data, tmp_path,
                                                                            monkeypatch, read_csv):
    test_images = sorted(demo_data.test_dir.rglob("*.png"))
    out, reference = tmp_path / "pred", tmp_path / "reference"
    predicted: list[int] = []
    _crash_after(monkeypatch, 3, predicted)
    assert _predict(model_dir, demo_data.test_dir, out) == 1
    rows = read_csv(out / "scores.csv")
    assert len(rows) == 3 and all((out / row["heatmap"]).is_file() and (out / row["map"]).is_file() for row in rows)
    assert {row["path"] for row in read_csv(out / "regions.csv")} <= {row["path"] for row in rows}
    # what a kill in the middle of a write leaves: a torn last line, regions of an image without its score row
    with open(out / "scores.csv", "a") as handle:
        handle.write(f"{test_images[-1]},0.12")
    with open(out / "regions.csv", "a") as handle:
        handle.write(f"{test_images[-1]},1,0,0,1,1,1,0.5\r\n{test_images[-1]},2,0")

    monkeypatch.undo()
    predicted.clear()
    _crash_after(monkeypatch, len(test_images), predicted)  # counts the images asked for; never crashes
    assert _predict(model_dir, demo_data.test_dir, out, "--resume") == 0
    assert predicted == [len(test_images) - 3]
    assert _predict(model_dir, demo_data.test_dir, reference) == 0
    rows, expected = read_csv(out / "scores.csv"), read_csv(reference / "scores.csv")
    assert [row["path"] for row in rows] == [row["path"] for row in expected] == [str(p) for p in test_images]
    assert [row["score"] for row in rows] == [row["score"] for row in expected]
    assert read_csv(out / "regions.csv") == read_csv(reference / "regions.csv")

    # a resumed run with nothing left to do changes nothing
    assert _predict(model_dir, demo_data.test_dir, out, "--resume") == 0
    assert sum(predicted[2:]) == 0 and read_csv(out / "scores.csv") == rows


def test_resume_refuses_a_folder_written_by_another_model_or_settings(model_dir, demo_data, tmp_path, capsys):
    out = tmp_path / "pred"
    assert _predict(model_dir, demo_data.test_dir, out) == 0
    capsys.readouterr()
    assert main(["--quiet", "predict", str(model_dir), str(demo_data.test_dir), "--out", str(out), "--resume",
                 "--threshold", "0.5"]) == 1
    assert "different model or settings (differing: threshold)" in capsys.readouterr().err
    refit = tmp_path / "refit"
    shutil.copytree(model_dir, refit)
    with open(refit / "model.json", "a") as handle:  # another model's manifest (still valid JSON)
        handle.write("\n")
    assert _predict(refit, demo_data.test_dir, out, "--resume") == 1
    assert "(differing: model, model_digest)" in capsys.readouterr().err


def test_rows_name_images_absolutely_so_resume_and_report_work_from_another_folder(model_dir, demo_data, tmp_path,
                                                                                   monkeypatch, read_csv):
    from funad.reports.html import write_report

    out, elsewhere = tmp_path / "pred", tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(demo_data.test_dir.parent)
    assert _predict(model_dir, demo_data.test_dir.name, out) == 0  # the images named relative to here
    rows = read_csv(out / "scores.csv")
    assert [row["path"] for row in rows] == [str(p) for p in sorted(demo_data.test_dir.rglob("*.png"))]
    assert {row["path"] for row in read_csv(out / "regions.csv")} <= {row["path"] for row in rows}

    monkeypatch.chdir(elsewhere)
    predicted: list[int] = []
    _crash_after(monkeypatch, len(rows), predicted)  # counts the images asked for; never crashes
    assert _predict(model_dir, demo_data.test_dir, out, "--resume") == 0
    assert sum(predicted) == 0 and read_csv(out / "scores.csv") == rows
    assert "missing:" not in write_report(out).read_text()  # every picture found from here


def test_resume_refuses_other_inputs_that_would_share_output_names(model_dir, demo_data, tmp_path, capsys, read_csv):
    out = tmp_path / "pred"
    good, defect = sorted(folder for folder in demo_data.test_dir.iterdir() if folder.is_dir())[:2]
    assert _predict(model_dir, good, out) == 0
    capsys.readouterr()
    # both folders' first image would be maps/000.png.npy: the second run would write over the first's
    assert _predict(model_dir, defect, out, "--resume") == 1
    assert "(differing: input_folder)" in capsys.readouterr().err
    assert len(read_csv(out / "scores.csv")) == len(list(good.glob("*.png")))


def test_a_folder_written_before_input_folder_was_recorded_still_resumes(model_dir, demo_data, tmp_path, read_csv):
    import json

    out = tmp_path / "pred"
    assert _predict(model_dir, demo_data.test_dir, out) == 0
    description = json.loads((out / "prediction.json").read_text())
    del description["input_folder"]  # as the previous version wrote it
    (out / "prediction.json").write_text(json.dumps(description))
    rows = read_csv(out / "scores.csv")
    assert _predict(model_dir, demo_data.test_dir, out, "--resume") == 0
    assert read_csv(out / "scores.csv") == rows


def test_an_earlier_prediction_is_refused_or_replaced_whole(model_dir, demo_data, tmp_path, capsys, read_csv):
    out = tmp_path / "pred"
    good, defect = sorted(folder for folder in demo_data.test_dir.iterdir() if folder.is_dir())[:2]
    assert _predict(model_dir, demo_data.test_dir, out) == 0
    first = read_csv(out / "scores.csv")
    mine = out / "notes.txt"  # a user's own file in the folder
    mine.write_text("kept")
    capsys.readouterr()
    assert _predict(model_dir, good, out) == 1  # neither --resume nor --overwrite: the earlier results stay
    assert "holds an earlier prediction" in capsys.readouterr().err
    assert read_csv(out / "scores.csv") == first
    # --overwrite: the earlier run's maps and heatmaps go with its rows (the defect images' were stale beside
    # the new ones before)
    assert _predict(model_dir, good, out, "--overwrite") == 0
    rows = read_csv(out / "scores.csv")
    assert [row["path"] for row in rows] == [str(p) for p in sorted(good.glob("*.png"))]
    written = {str(path.relative_to(out)) for path in out.rglob("*") if path.is_file()}
    assert written == ({row["map"] for row in rows} | {row["heatmap"] for row in rows}
                       | {"scores.csv", "regions.csv", "prediction.json", "notes.txt"})
    assert mine.read_text() == "kept"
    with pytest.raises(SystemExit):
        _predict(model_dir, good, out, "--overwrite", "--resume")
    own = tmp_path / "own"  # a user's folder that holds no prediction: nothing of it is removed
    (own / "maps").mkdir(parents=True)
    (own / "maps" / "mine.npy").write_text("kept")
    assert _predict(model_dir, good, own, "--overwrite") == 0
    assert (own / "maps" / "mine.npy").read_text() == "kept"


def test_predict_fails_when_no_input_could_be_read(model_dir, tmp_path, capsys, read_csv):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    assert _predict(model_dir, broken, tmp_path / "pred") == 1
    assert "none of the 1 input images could be read" in capsys.readouterr().err
    assert read_csv(tmp_path / "pred" / "scores.csv")[0]["error"]


def test_predict_checks_the_model_before_the_images(model_dir, demo_data, tmp_path, capsys):
    assert main(["--quiet", "predict", str(demo_data.test_dir), str(model_dir), "--out", str(tmp_path / "p")]) == 1
    assert "takes the model first" in capsys.readouterr().err
    assert main(["--quiet", "predict", str(tmp_path / "no_model"), str(demo_data.test_dir), "--out",
                 str(tmp_path / "p")]) == 1
    assert f"no such model directory: {tmp_path / 'no_model'}" in capsys.readouterr().err


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="thread priorities are a Unix feature")
def test_writer_threads_run_below_the_backbones_priority(tmp_path):
    import threading

    from funad.reports.prediction_writer import WRITER_NICENESS, ImageRows, PredictionWriter

    seen = []

    def job() -> ImageRows:
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return ImageRows(["a.png", "1", "normal", "2", "", "", ""])

    with PredictionWriter(tmp_path, append=False, threads=2, max_pending=4, max_pending_bytes=1 << 20) as writer:
        writer.submit(job, 0)
    assert seen == [min(19, os.getpriority(os.PRIO_PROCESS, 0) + WRITER_NICENESS)]
    assert writer.written == 1
