"""report.html in a real headless browser (Debian chromium): it renders and every image loads.

Skipped without chromium on a developer machine; under CI (the CI environment variable set)
a missing browser is a failure, so the check cannot silently stop running.
"""

import csv
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from funad.reports.html import write_report
from funad.reports.prediction_folder import COLUMNS

# The report itself carries no script; the test appends one that counts the images the
# browser actually decoded (naturalWidth > 0) and writes the count into the DOM.
_COUNT_LOADED = """<script>window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const loaded = images.filter((image) => image.complete && image.naturalWidth > 0).length;
  document.body.insertAdjacentHTML("beforeend",
    `<p id="image-count">${loaded} of ${images.length} loaded</p>`);
});</script>"""

_BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--virtual-time-budget=10000"]


def _chromium() -> str:
    browser = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed but CI is set: install it (apt-get install -y chromium)")
        pytest.skip("chromium not installed (apt-get install -y chromium); the browser test needs it")
    return browser


def _run_browser(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    profile.mkdir(exist_ok=True)
    return subprocess.run([browser, *_BROWSER_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=180, check=True)


def _prediction_folder(root: Path, count: int) -> Path:
    """A `funad predict`-style folder with ``count`` textured images, heatmaps and maps."""
    rng = np.random.default_rng(0)
    folder = root / "pred"
    (folder / "heatmaps").mkdir(parents=True)
    (folder / "maps").mkdir()
    rows = []
    for index in range(count):
        name = f"part <{index}>&.png"
        image = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
        Image.fromarray(image).save(root / name)
        heat = np.zeros((48, 64, 3), np.uint8)
        heat[..., 0] = np.linspace(0, 255, 64, dtype=np.uint8)
        Image.fromarray(heat).save(folder / "heatmaps" / name)
        np.save(folder / "maps" / f"{index}.npy", rng.random((48, 64)).astype(np.float32))
        score = float(index) / count
        rows.append([str(root / name), score, "anomalous" if score > 0.5 else "normal", 0.5,
                     f"heatmaps/{name}", f"maps/{index}.npy"])
    with open(folder / "scores.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([COLUMNS, *rows])
    return folder


def test_report_renders_with_every_image_loaded(tmp_path):
    browser = _chromium()
    count = 5
    report = write_report(_prediction_folder(tmp_path, count))
    probe = report.with_name("probe.html")
    probe.write_text(report.read_text().replace("</body>", _COUNT_LOADED + "</body>"))

    dom = _run_browser(browser, tmp_path / "profile-dom", "--dump-dom", probe.as_uri()).stdout
    found = re.search(r'id="image-count">(\d+) of (\d+) loaded', dom)
    assert found, "the counting script did not run in the browser"
    expected = 2 * count + 1  # image and heatmap per prediction, plus the histogram
    assert (int(found.group(1)), int(found.group(2))) == (expected, expected)

    screenshot = tmp_path / "report.png"
    _run_browser(browser, tmp_path / "profile-shot", f"--screenshot={screenshot}", "--window-size=1000,1400",
                 report.as_uri())
    pixels = np.asarray(Image.open(screenshot).convert("L"), dtype=np.float64)
    assert pixels.shape == (1400, 1000)
    assert pixels.std() > 10, "the screenshot is (nearly) blank"
