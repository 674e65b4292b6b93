"""The contaminated-data protocol of SoftPatch and FUN-AD (docs/method.md, "Evaluation protocol").

n = int(ratio x number of normal training images) test anomalies, drawn at random (seeded), are
moved unlabelled into the training set. *No-overlap* removes them from the test set; *overlap*
keeps them. One :class:`Split` serves both settings: its training set is the same for both, so a
model is fitted once per split and evaluated on each setting's test set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from funad.benchmark.datasets import Dataset, Sample
from funad.benchmark.options import SETTINGS
from funad.utils.files import write_text_atomically
from funad.utils.masks import MVTEC_NORMAL_FOLDER

SPLIT_FORMAT_VERSION = 1


@dataclass
class Split:
    category: str
    ratio: float
    seed: int
    train: list[Path]
    moved: list[bool]  # aligned with train: True for a test anomaly moved into training
    test: list[Sample]  # the full test set; moved anomalies are in it (and in train)

    @property
    def moved_paths(self) -> set[Path]:
        return {path for path, moved in zip(self.train, self.moved) if moved}

    def test_set(self, setting: str) -> list[Sample]:
        if setting == "overlap":
            return list(self.test)
        if setting == "no-overlap":
            moved = self.moved_paths
            return [sample for sample in self.test if sample.path not in moved]
        raise ValueError(f"unknown setting {setting!r}; expected one of {SETTINGS}")

    def file_name(self) -> str:
        return f"{self.category}_{self.ratio:g}_{self.seed}.json"

    def to_dict(self) -> dict:
        return {
            "format": SPLIT_FORMAT_VERSION,
            "category": self.category,
            "ratio": self.ratio,
            "seed": self.seed,
            "train": [{"path": str(p), "moved": m} for p, m in zip(self.train, self.moved)],
            "test": [{"path": str(s.path), "label": s.label, "mask": str(s.mask) if s.mask else None,
                      "defect_type": s.defect_type} for s in self.test],
        }

    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / self.file_name()
        write_text_atomically(path, json.dumps(self.to_dict(), indent=1))
        return path


def make_split(dataset: Dataset, ratio: float, seed: int) -> Split:
    """Move ``int(ratio * len(dataset.train))`` randomly drawn test anomalies into training."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"contamination ratio must lie in [0, 1), got {ratio}")
    anomalies = [sample for sample in dataset.test if sample.label == 1]
    count = int(ratio * len(dataset.train))
    if count >= len(anomalies):
        raise ValueError(f"{dataset.name}: contamination {ratio} needs {count} test anomalies moved into training, "
                         f"but the test set has only {len(anomalies)} (at least one must stay for testing)")
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(anomalies), size=count, replace=False).tolist())
    moved = [anomalies[i].path for i in chosen]
    return Split(dataset.name, float(ratio), int(seed), list(dataset.train) + moved,
                 [False] * len(dataset.train) + [True] * len(moved), list(dataset.test))


def load_split(path: Path) -> Split:
    """Read a split written by :meth:`Split.save`; every image it names must still exist."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        if data.get("format") != SPLIT_FORMAT_VERSION:
            raise ValueError(f"split format {data.get('format')!r}, this funad reads {SPLIT_FORMAT_VERSION}")
        train = [Path(item["path"]) for item in data["train"]]
        moved = [bool(item["moved"]) for item in data["train"]]
        test = [Sample(Path(item["path"]), int(item["label"]), Path(item["mask"]) if item["mask"] else None,
                       item.get("defect_type", MVTEC_NORMAL_FOLDER)) for item in data["test"]]
        split = Split(data["category"], float(data["ratio"]), int(data["seed"]), train, moved, test)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a readable split file ({type(error).__name__}: {error})") from error
    missing = [p for p in split.train + [s.path for s in split.test] if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{path}: {len(missing)} images it names are missing (first: {missing[0]})")
    return split
