"""The garbage collector pause around a command's heavy imports (funad.utils.startup)."""

import gc
import subprocess
import sys

import pytest

from funad.utils.startup import garbage_collection_paused


@pytest.fixture(autouse=True)
def _restore_the_collector():
    enabled = gc.isenabled()
    yield
    gc.unfreeze()
    (gc.enable if enabled else gc.disable)()


def test_collection_is_paused_inside_and_resumes_after():
    gc.enable()
    gc.unfreeze()  # an earlier test's command may have frozen objects in this process
    assert gc.get_freeze_count() == 0
    with garbage_collection_paused():
        assert not gc.isenabled()
        made_inside = {"a list in a dict": [1, 2]}  # containers: objects the collector tracks
    assert gc.isenabled()
    assert gc.get_freeze_count() > 0  # what exists is frozen: later collections skip it
    assert not any(made_inside is found for found in gc.get_objects())  # frozen objects leave the generations


def test_resumes_after_an_error():
    gc.enable()
    with pytest.raises(ImportError), garbage_collection_paused():
        raise ImportError("a missing extra")
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off():
    gc.disable()
    with garbage_collection_paused():
        pass
    assert not gc.isenabled()


def test_loading_a_model_directory_leaves_the_collector_running(tmp_path):
    """In a fresh process (the pause is process-wide): torch is imported and frozen, and collection resumes
    even when there is no such folder."""
    script = (
        "import gc\n"
        "from pathlib import Path\n"
        "from funad.cli.loading import load_model_directory\n"
        "try:\n"
        "    load_model_directory(Path(r'%s'), None)\n"
        "except Exception as error:\n"
        "    print(type(error).__name__)\n"
        "import sys\n"
        "print('torch' in sys.modules, gc.isenabled(), gc.get_freeze_count() > 100000)\n" % (tmp_path / "missing"))
    lines = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    assert lines == ["FileNotFoundError", "True", "True", "True"]
