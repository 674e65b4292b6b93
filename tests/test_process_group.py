"""`funad.utils.distributed.process_group`: the ranks wait for each other before leaving the group, except after
an error (a rank tearing the gloo group down while another was still in it aborted now and then at exit)."""

import pytest

from funad.utils import distributed


class _RecordingGroup:
    """Stands in for ``torch.distributed``: records the calls of one rank."""

    def __init__(self):
        self.calls = []

    def is_initialized(self):
        return False

    def init_process_group(self, backend, timeout):
        self.calls.append("init")

    def barrier(self):
        self.calls.append("barrier")

    def destroy_process_group(self):
        self.calls.append("destroy")


@pytest.fixture
def group(monkeypatch):
    recording = _RecordingGroup()
    for name, value in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "1",
                        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(distributed, "_dist", lambda: recording)
    return recording


def test_the_ranks_leave_together(group):
    from datetime import timedelta

    with distributed.process_group(timedelta(minutes=1)):
        group.calls.append("work")
    assert group.calls == ["init", "work", "barrier", "destroy"]


def test_after_an_error_no_rank_waits(group):
    from datetime import timedelta

    with pytest.raises(RuntimeError, match="rank failed"), distributed.process_group(timedelta(minutes=1)):
        raise RuntimeError("rank failed")
    assert group.calls == ["init", "destroy"]
