"""The contamination sweep as a figure: image and pixel AUROC against the contamination ratio."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: the benchmark runs on machines without a display
import matplotlib.pyplot as plt

from funad.benchmark.options import METHODS

_LINE_STYLES = {"no-overlap": "-", "overlap": "--"}


def plot_sweep(summary: list[dict], path: Path, title: str) -> Path:
    """One panel per metric; a line per method and setting with its seed spread as error bars."""
    metrics = [m for m in ("image_auroc", "pixel_auroc") if any(m in row for row in summary)]
    figure, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), squeeze=False)
    colours = dict(zip(METHODS, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for axis, metric in zip(axes[0], metrics):
        for method in METHODS:
            for setting, style in _LINE_STYLES.items():
                rows = sorted((r for r in summary if r["method"] == method and r["setting"] == setting
                               and metric in r), key=lambda r: r["ratio"])
                if not rows:
                    continue
                axis.errorbar([100 * r["ratio"] for r in rows], [100 * r[metric]["mean"] for r in rows],
                              yerr=[100 * r[metric]["std"] for r in rows], linestyle=style, marker="o",
                              color=colours[method], capsize=3, label=f"{method} ({setting})")
        axis.set_xlabel("contamination (% of the normal training images)")
        axis.set_ylabel(metric.replace("_", " ").replace("auroc", "AUROC") + " (%)")
        axis.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
