"""Peak memory of `funad predict` on one large photo (24 MP by default), per output setting.

Writes a synthetic WIDTHxHEIGHT RGB photo (smooth colour gradients and noise, saved as JPEG)
in a temporary folder and runs `funad predict` on it in a fresh process per case, reading that
process's own peak resident set size (``os.wait4``). The first case scores a small copy of
the same photo: the cost of the process itself (Python, torch, the model), so each large
case's growth over it is what the photo's size costs.

The model is ``--model DIR``, or a tiny one fitted here on small synthetic images with the
small CNN (as the tests do). The commands run under the Python that runs this script, with
its environment, so ``PYTHONPATH=OLD/src`` measures an older funad; ``--case plain`` runs
`funad predict` without output flags (what an older CLI without them writes).

    python benchmarks/large_image.py
    python benchmarks/large_image.py --model MODEL --size 6000x4000 --case npy-original png-input
    PYTHONPATH=OLD_CHECKOUT/src python benchmarks/large_image.py --case plain
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

# `funad predict` flags per case; "small" is the process's own cost (the photo at 64 x 64).
CASES = {
    "plain": [],
    "npy-original": ["--maps", "npy", "--map-size", "original"],
    "png-input": ["--maps", "png", "--map-size", "input"],
}
TINY_FIT = ["--backbone", "efficientnet_lite0", "--image-size", "64", "--epochs", "2", "--batch-size", "8",
            "--patches-per-image", "16", "--num-workers", "0"]


def synthetic_photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """Colour gradients plus noise: compresses like a photo, not like a flat image."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    gradient = 255 * (0.5 * x + 0.3 * y + 0.2 * x * y) * np.array([1.0, 0.7, 0.4], dtype=np.float32)
    noise = rng.integers(0, 40, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(np.clip(gradient + noise, 0, 255).astype(np.uint8))


def run_funad(arguments: list[str]) -> float:
    """Run ``funad ARGUMENTS`` and return its peak RSS in MB (Linux reports ru_maxrss in KiB)."""
    process = subprocess.Popen([sys.executable, "-m", "funad.cli", "--quiet", *arguments])
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, ["funad", *arguments])
    return usage.ru_maxrss / 1024


def fit_tiny_model(work: Path) -> Path:
    training = work / "train"
    training.mkdir()
    for index in range(16):
        synthetic_photo(64, 64, seed=index).save(training / f"normal_{index:02d}.png")
    run_funad(["fit", str(training), "--out", str(work / "model"), *TINY_FIT])
    return work / "model"


def measure(model: Path, width: int, height: int, cases: list[str], work: Path) -> dict[str, float]:
    photo = synthetic_photo(width, height)
    photo.save(work / "large.jpg", quality=90)
    photo.resize((64, 64), Image.Resampling.BILINEAR).save(work / "small.jpg", quality=90)
    del photo  # this process's memory is not measured, but keep it small beside the children
    peaks = {"small": run_funad(["predict", str(model), str(work / "small.jpg"), "--out", str(work / "small")])}
    for case in cases:
        peaks[case] = run_funad(["predict", str(model), str(work / "large.jpg"), "--out", str(work / case),
                                 *CASES[case]])
    return peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="a fitted model (default: fit a tiny one)")
    parser.add_argument("--size", default="6000x4000", help="the photo's WIDTHxHEIGHT (default 6000x4000)")
    parser.add_argument("--case", nargs="+", choices=sorted(CASES), default=["npy-original", "png-input"])
    args = parser.parse_args()
    width, height = (int(side) for side in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="funad-large-image-") as folder:
        work = Path(folder)
        model = args.model or fit_tiny_model(work)
        peaks = measure(model, width, height, args.case, work)
    print(f"photo={width}x{height} ({width * height / 1e6:.1f} MP)")
    for case, peak in peaks.items():
        growth = "" if case == "small" else f" growth_mb={round(peak - peaks['small'])}"
        print(f"case={case} peak_rss_mb={peak:.0f}{growth}")


if __name__ == "__main__":
    main()
