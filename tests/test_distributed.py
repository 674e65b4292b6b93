"""`torchrun -m funad fit` on two gloo ranks: sharded extraction, the single-process model, resume after a dead rank."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from funad import FunAD
from funad.cli.fit import run_folder
from funad.utils.distributed import block

from conftest import EXTRACTIONS_PER_FIT, TINY

RANK_LINE = re.compile(r"rank=(\d+) world_size=(\d+) images=(\d+)")


def _torchrun(args: list[str], **popen) -> subprocess.Popen:
    """``torchrun --standalone --nproc-per-node 2 -m funad ARGS`` (torchrun is torch's ``torch.distributed.run``)."""
    return _torchrun_program(["-m", "funad", *args], **popen)


def _torchrun_program(program: list[str], **popen) -> subprocess.Popen:
    """``torchrun --standalone --nproc-per-node 2 PROGRAM`` (a script, or ``-m`` and a module, with its arguments)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *program]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def _fit_args(train_dir: Path, out: Path, tiny_cli_flags, *extra: str) -> list[str]:
    return ["fit", str(train_dir), "--out", str(out), "--no-cache", *tiny_cli_flags, *extra]


def _scores(model_dir: Path, images: list[Path]) -> np.ndarray:
    return FunAD.load(model_dir, progress=False).score(images)


def _assert_sharded(output: str, images: int, extractions: int = EXTRACTIONS_PER_FIT) -> None:
    lines = RANK_LINE.findall(output)
    assert sorted(int(rank) for rank, _, _ in lines) == sorted([0, 1] * extractions), output
    assert {int(size) for _, size, _ in lines} == {2}
    assert sum(int(count) for _, _, count in lines) == images * extractions  # shared, not repeated on every rank


@pytest.mark.parametrize(("allowed", "workers"), [(2, 0), (5, 3), (64, 4)])
def test_loader_workers_follow_the_cores_this_process_may_use(monkeypatch, allowed, workers):
    """A Slurm allocation or taskset of few cores on a large machine: workers are sized by the allowed cores."""
    from funad.config import default_num_workers

    monkeypatch.setattr(os, "cpu_count", lambda: 128)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(allowed)), raising=False)
    assert default_num_workers() == workers


def test_blocks_cover_every_item_once():
    for count in (0, 1, 7, 20):
        for parts in (1, 2, 3, 8):
            blocks = [block(count, index, parts) for index in range(parts)]
            assert [i for b in blocks for i in b] == list(range(count))
            assert max(map(len, blocks)) - min(map(len, blocks)) <= 1


def _worker_of_rank(launcher: int, rank: int) -> int:
    """The pid of the process torchrun (pid ``launcher``) started for ``rank``."""
    children = Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split()
    for child in children:
        environment = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        if f"RANK={rank}".encode() in environment:
            return int(child)
    raise AssertionError(f"no rank {rank} among torchrun's processes {children}")


EPOCHS = 6


@pytest.fixture(scope="module")
def killed_then_resumed(demo_data, tmp_path_factory, tiny_cli_flags):
    """A 2-rank fit whose rank 1 is killed after the first checkpoint, then the same command with --resume.

    Two launches serve every test here (each costs seconds of imports): the resumed run trains
    its remaining epochs, and extracts its features, on two ranks too.
    """
    out = tmp_path_factory.mktemp("distributed") / "model"
    args = _fit_args(demo_data.train_dir, out, tiny_cli_flags, "--epochs", str(EPOCHS))
    manifest = run_folder(out.resolve()) / "checkpoint" / "checkpoint.json"
    run = _torchrun(args)
    deadline = time.monotonic() + 120
    while not manifest.exists():
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()[0]
        time.sleep(0.02)
    os.kill(_worker_of_rank(run.pid, 1), signal.SIGKILL)
    killed_output, _ = run.communicate(timeout=120)
    killed = (run.returncode, killed_output, json.loads(manifest.read_text())["epoch"], out.exists())
    resumed = _torchrun(args + ["--resume"])
    resumed_output, _ = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, resumed_output
    return killed, resumed_output, out


@pytest.fixture(scope="module")
def predicted(killed_then_resumed, demo_data, tmp_path_factory):
    """``torchrun ... -m funad predict`` of the test images with the 2-rank model."""
    out = tmp_path_factory.mktemp("predicted")
    run = _torchrun(["predict", str(killed_then_resumed[2]), str(demo_data.test_dir), "--out", str(out),
                     "--maps", "none"])
    output, _ = run.communicate(timeout=120)
    assert run.returncode == 0, output
    return output, out


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds torchrun's workers through /proc")
def test_two_ranks_fit_the_single_process_model(killed_then_resumed, demo_data):
    (_, killed_output, _, _), resumed_output, model_dir = killed_then_resumed
    train = sorted(demo_data.train_dir.glob("*.png"))
    _assert_sharded(killed_output, len(train))
    _assert_sharded(resumed_output, len(train))

    single = FunAD(cache_dir=False, progress=False, **(TINY | {"epochs": EPOCHS})).fit(demo_data.train_dir)
    two = FunAD.load(model_dir, progress=False)
    assert two.world_size_ == 2 and single.world_size_ == 1
    assert [p.name for p in two.train_paths_] == [p.name for p in train]
    assert len(two.history_) == EPOCHS
    np.testing.assert_allclose(two.train_scores_, single.train_scores_, rtol=1e-3)
    test_images = sorted(demo_data.test_dir.rglob("*.png"))
    np.testing.assert_allclose(two.score(test_images), single.score(test_images), rtol=1e-3)
    assert two.threshold_ == pytest.approx(single.threshold_, rel=1e-3)


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds torchrun's workers through /proc")
def test_a_dead_rank_stops_the_job_and_resume_continues(killed_then_resumed):
    (returncode, killed_output, stopped_after, model_written), resumed_output, _ = killed_then_resumed
    assert returncode != 0 and not model_written, killed_output
    assert "Signal 9 (SIGKILL)" in killed_output  # torchrun's summary names the rank that died and why
    assert 1 <= stopped_after < EPOCHS
    resumed_from = re.search(r"resuming from the checkpoint in \S+ after epoch (\d+)", resumed_output)
    assert resumed_from and int(resumed_from.group(1)) == stopped_after, resumed_output


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds torchrun's workers through /proc")
def test_predict_shares_the_images_among_the_ranks(predicted, killed_then_resumed, demo_data, read_csv):
    output, out = predicted
    test_images = sorted(demo_data.test_dir.rglob("*.png"))
    _assert_sharded(output, len(test_images), extractions=1)
    rows = read_csv(out / "scores.csv")
    assert [row["path"] for row in rows] == [str(path) for path in test_images]
    assert all((out / row["heatmap"]).is_file() for row in rows)
    expected = FunAD.load(killed_then_resumed[2], progress=False).score(test_images)
    np.testing.assert_allclose([float(row["score"]) for row in rows], expected, rtol=1e-5)
    assert sorted(path.name for path in out.iterdir()) == ["heatmaps", "prediction.json", "regions.csv", "scores.csv"]


LEFT_GROUP = """
import os
import sys
from datetime import timedelta
from pathlib import Path

from funad.utils.distributed import process_group

with process_group(timedelta(minutes=1)):
    import torchvision  # imports torch._dynamo, as timm does: once with a group alive, it kept the group
names = [Path(f"/proc/self/task/{task}/comm").read_text().strip() for task in os.listdir("/proc/self/task")]
Path(sys.argv[1], "rank" + os.environ["RANK"]).write_text(" ".join(name for name in names if "gloo" in name))
"""


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads the threads' names from /proc")
def test_leaving_the_group_stops_its_threads(tmp_path):
    """A group kept past destroy_process_group left gloo threads running into interpreter shutdown, where one
    aborted the rank now and then ("terminate called without an active exception")."""
    script = tmp_path / "leave.py"
    script.write_text(LEFT_GROUP)
    run = _torchrun_program([str(script), str(tmp_path)])
    output, _ = run.communicate(timeout=120)
    assert run.returncode == 0, output
    assert {rank: (tmp_path / f"rank{rank}").read_text() for rank in (0, 1)} == {0: "", 1: ""}  # gloo threads left
