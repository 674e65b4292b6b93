"""`funad serve`: the real server on loopback, called with a real HTTP client (and a headless browser)."""

import base64
import io
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

from funad.model import FunAD
from test_report_browser import _chromium, _run_browser

from conftest import TINY

MAX_UPLOAD_MB = 0.25


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def model(demo_data, tmp_path_factory):
    directory = tmp_path_factory.mktemp("serve") / "model"
    fitted = FunAD(cache_dir=False, progress=False, **TINY).fit(demo_data.train_dir)
    fitted.save(directory)
    return fitted, directory


def _start_server(directory) -> tuple[subprocess.Popen, str] | str:
    """A `funad serve` answering /health and its address, or what it printed if it exited first (another
    process may have taken its port)."""
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-m", "funad.cli", "--quiet", "serve", str(directory),
                                "--port", str(port), "--max-upload-mb", str(MAX_UPLOAD_MB)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while process.poll() is None:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.terminate()
            pytest.fail(f"funad serve did not answer in 120 s: {process.communicate(timeout=30)[0]}")
        time.sleep(0.3)
    return process.communicate(timeout=30)[0]


@pytest.fixture(scope="module")
def server(model):
    _, directory = model
    # The free port is only free when probed: a server that lost it to another process is started again.
    for _ in range(3):
        started = _start_server(directory)
        if not isinstance(started, str):
            break
    else:
        pytest.fail(f"funad serve exited three times before answering, last with: {started}")
    process, url = started
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _png(path) -> bytes:
    buffer = io.BytesIO()
    Image.open(path).save(buffer, format="PNG")
    return buffer.getvalue()


def test_health(server, model):
    fitted, directory = model
    health = httpx.get(f"{server}/health").json()
    assert health["status"] == "ok" and health["model"] == str(directory.resolve())
    assert health["threshold"] == pytest.approx(fitted.threshold_)


def test_predict_answers_what_the_model_scores(server, model, demo_data):
    fitted, _ = model
    path = demo_data.test_paths[-1]
    answer = httpx.post(f"{server}/predict", files={"file": (path.name, _png(path), "image/png")},
                        params={"heatmap": "true"}, timeout=60)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["score"] == pytest.approx(float(fitted.score(path)[0]), rel=1e-5)
    assert body["anomalous"] == (body["score"] > body["threshold"]) and body["label"] in ("anomalous", "normal")
    assert (body["width"], body["height"]) == Image.open(path).size
    assert bool(body["regions"]) <= body["anomalous"]  # regions only for an anomalous image
    heatmap = Image.open(io.BytesIO(base64.b64decode(body["heatmap_png"])))
    assert heatmap.size == Image.open(path).size
    assert "heatmap_png" not in httpx.post(f"{server}/predict", files={"file": ("x.png", _png(path))},
                                           timeout=60).json()


@pytest.mark.parametrize(("upload", "status", "message"), [
    (("empty.png", b""), 400, "empty file"),
    (("notes.png", b"these are not pixels"), 415, "not an image file"),
    (("huge.png", bytes(int(MAX_UPLOAD_MB * 1024 * 1024) + 10)), 413, "upload too large"),
    (("big.png", bytes(int(MAX_UPLOAD_MB * 1024 * 1024) + 200_000)), 413, "upload too large"),
])
def test_bad_uploads_get_a_4xx_with_a_message(server, upload, status, message):
    answer = httpx.post(f"{server}/predict", files={"file": upload}, timeout=60)
    assert answer.status_code == status and message in answer.json()["detail"]
    assert httpx.get(f"{server}/health").status_code == 200  # the worker is still there


def test_a_request_without_the_file_field_is_a_4xx(server):
    answer = httpx.post(f"{server}/predict", data={"other": "x"}, timeout=60)
    assert answer.status_code == 422 and "file" in answer.text


def test_fifty_concurrent_requests_all_answer_correctly(server, model, demo_data):
    fitted, _ = model
    paths = demo_data.test_paths
    expected = dict(zip(paths, fitted.score(paths)))
    uploads = {path: _png(path) for path in paths}

    def call(index: int):
        path = paths[index % len(paths)]
        started = time.perf_counter()
        answer = httpx.post(f"{server}/predict", files={"file": (path.name, uploads[path], "image/png")},
                            timeout=120)
        return path, answer, time.perf_counter() - started

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(call, range(50)))
    for path, answer, _ in results:
        assert answer.status_code == 200, answer.text
        assert answer.json()["score"] == pytest.approx(float(expected[path]), rel=1e-5)
    latencies = np.array([seconds for _, _, seconds in results])
    print(f"50 concurrent requests: all correct; latency p50 {np.percentile(latencies, 50):.2f} s, "
          f"p95 {np.percentile(latencies, 95):.2f} s")


def test_the_form_page_loads_and_reaches_the_model_in_a_browser(server, tmp_path):
    browser = _chromium()
    dom = _run_browser(browser, tmp_path / "profile", "--dump-dom", f"{server}/").stdout
    assert 'type="file"' in dom and 'id="drop"' in dom
    assert "model ready: efficientnet_lite0" in dom  # the page's script fetched /health


def test_a_port_in_use_is_refused_before_the_model_loads(tmp_path, capsys):
    from funad.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # no model there: the address is checked first, so its error is the one reported
        assert main(["serve", str(tmp_path / "no model"), "--port", str(port)]) == 1
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
