"""Benchmark results as one table: mean ± std over seeds per dataset, and the mean over datasets.

A row is one (dataset, ratio, setting, method). With several datasets, a "mean over datasets"
row per (ratio, setting, method) averages the per-dataset means of each metric over the datasets
that report it, so the pixel metrics average only the datasets with masks.
"""

from __future__ import annotations

import numpy as np

from funad.benchmark.options import METHODS, METRICS

MEAN_OVER_DATASETS = "mean over datasets"
LABEL_NOTE = ("\n\nlabel_recall / label_false_alarm_rate: the shares of anomalous / good test images that funad's "
              "label-free threshold labels anomalous; \"-\" for the peers, which have no threshold.")
QUANTITIES = METRICS + ("fit_seconds", "predict_seconds")


def _by_ratio_setting_method(records: list[dict]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for record in records:
        groups.setdefault((record["ratio"], record["setting"], record["method"]), []).append(record)
    return groups


def summarise(runs: list[dict]) -> list[dict]:
    """Mean and standard deviation (ddof 1; 0 for one seed) of every metric per ratio, setting and method."""
    summary = []
    for (ratio, setting, method), members in _by_ratio_setting_method(runs).items():
        row = {"ratio": ratio, "setting": setting, "method": method, "seeds": [r["seed"] for r in members]}
        for quantity in QUANTITIES:
            values = np.array([r[quantity] for r in members if quantity in r], dtype=np.float64)
            if len(values):
                row[quantity] = {"mean": float(values.mean()),
                                 "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0}
        summary.append(row)
    return summary


def mean_over_datasets(rows: list[dict]) -> list[dict]:
    """Per (ratio, setting, method): each quantity's mean of the per-dataset means, and which datasets it averages."""
    means = []
    for (ratio, setting, method), members in _by_ratio_setting_method(rows).items():
        mean: dict = {"dataset": MEAN_OVER_DATASETS, "ratio": ratio, "setting": setting, "method": method}
        for quantity in QUANTITIES:
            averaged = [r for r in members if quantity in r]
            if averaged:
                mean[quantity] = {"mean": float(np.mean([r[quantity]["mean"] for r in averaged])),
                                  "datasets": [r["dataset"] for r in averaged]}
        means.append(mean)
    return means


def summarise_datasets(runs_by_dataset: dict[str, list[dict]]) -> dict:
    """``rows`` per dataset (in the order given) and, for two datasets or more, their ``means``."""
    rows = [{"dataset": name, **row} for name, runs in runs_by_dataset.items() for row in summarise(runs)]
    return {"rows": rows, "means": mean_over_datasets(rows) if len(runs_by_dataset) > 1 else []}


def _cell(value: dict | None, scale: float, digits: int) -> str:
    if value is None:
        return "-"
    text = f"{scale * value['mean']:.{digits}f}"
    return text + f" ± {scale * value['std']:.{digits}f}" if "std" in value else text


def _footnote(rows: list[dict], means: list[dict]) -> str:
    """Which datasets the means cover; the pixel metrics' fewer where some datasets have no masks."""
    if not means:
        return ""
    datasets = list(dict.fromkeys(row["dataset"] for row in rows))
    with_masks = list(dict.fromkeys(row["dataset"] for row in rows if "pixel_auroc" in row))
    note = f"\n\n{MEAN_OVER_DATASETS}: the mean of the per-dataset means ({', '.join(datasets)})"
    if with_masks != datasets:
        note += f"; pixel AUROC and AUPRO only over the datasets with masks ({', '.join(with_masks) or 'none'})"
    return note + "."


def format_table(summary: dict) -> str:
    """A Markdown table of :func:`summarise_datasets`: metrics in percent, mean ± std over seeds;
    fit/predict times in seconds; "-" where a dataset has no masks or a method no threshold. Footnotes say what
    the means cover and what the label columns are."""
    rows, means = summary["rows"], summary["means"]
    metrics = [m for m in METRICS if any(m in row for row in rows)]
    header = ["dataset", "ratio", "setting", "method", *metrics, "fit s", "predict s"]
    datasets = list(dict.fromkeys(row["dataset"] for row in rows)) + [MEAN_OVER_DATASETS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    # Datasets side by side within each (ratio, setting); their mean after them.
    order = sorted(rows + means, key=lambda r: (r["ratio"], r["setting"], datasets.index(r["dataset"]),
                                                METHODS.index(r["method"])))
    for row in order:
        cells = [row["dataset"], f"{row['ratio']:g}", row["setting"], row["method"]]
        cells += [_cell(row.get(m), 100, 2) for m in metrics]
        cells += [_cell({"mean": row[m]["mean"]}, 1, 1) for m in ("fit_seconds", "predict_seconds")]
        lines.append("| " + " | ".join(cells) + " |")
    labels = LABEL_NOTE if "label_recall" in metrics else ""
    return "\n".join(lines) + _footnote(rows, means) + labels
