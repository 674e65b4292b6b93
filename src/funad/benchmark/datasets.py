"""Reading benchmark datasets: MVTec AD, VisA (1cls split) and a generic normal/abnormal folder layout.

Every layout becomes the same :class:`Dataset`: the training images (all presumed normal by the
dataset, which is what the contamination protocol needs to count) and the labelled test samples,
each with its ground-truth mask when the layout provides one.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from funad.data.images import IMAGE_EXTENSIONS, discover_images
from funad.utils.masks import MVTEC_NORMAL_FOLDER, mvtec_mask_path

#: In the generic layout one normal image in this many (sorted by name) is held out for testing,
#: so the test set has normals and the split needs no randomness of its own.
GENERIC_TEST_NORMAL_EVERY = 5
#: Folder names the generic layout accepts, in order of preference.
GENERIC_NORMAL_NAMES = ("normal", "good")
GENERIC_ABNORMAL_NAMES = ("abnormal", "anomaly", "defect")
GENERIC_MASK_NAMES = ("masks", "mask", "ground_truth")


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int  # 1 = anomalous
    mask: Path | None = None  # ground truth; None for normals and for layouts without masks
    defect_type: str = MVTEC_NORMAL_FOLDER


@dataclass
class Dataset:
    name: str
    layout: str  # "mvtec" | "visa" | "folders"
    train: list[Path]
    test: list[Sample]

    @property
    def has_masks(self) -> bool:
        return any(sample.mask is not None for sample in self.test)


def _images(folder: Path) -> list[Path]:
    return sorted(discover_images(folder)) if folder.is_dir() else []


# --------------------------------------------------------------------------- MVTec AD


def _mvtec_category_dir(root: Path, category: str | None) -> Path | None:
    """The folder holding train/ and test/: ``root`` itself or ``root/category``."""
    for candidate in ([root / category] if category else []) + [root]:
        if (candidate / "train").is_dir() and (candidate / "test").is_dir():
            return candidate
    return None


def load_mvtec(root: Path, category: str | None = None) -> Dataset:
    """``<cat>/train/good`` (or plain ``<cat>/train``), ``<cat>/test/<type>`` and
    ``<cat>/ground_truth/<type>/<name>_mask.png``."""
    folder = _mvtec_category_dir(Path(root), category)
    if folder is None:
        raise FileNotFoundError(f"{root}: no MVTec AD category folder with train/ and test/ "
                                f"(looked in {root}{' and ' + str(Path(root) / category) if category else ''})")
    train_dir = folder / "train" / MVTEC_NORMAL_FOLDER
    if not train_dir.is_dir():
        train_dir = folder / "train"
    train = _images(train_dir)
    test: list[Sample] = []
    for type_dir in sorted(p for p in (folder / "test").iterdir() if p.is_dir()):
        for path in _images(type_dir):
            if type_dir.name == MVTEC_NORMAL_FOLDER:
                test.append(Sample(path, 0))
                continue
            mask = mvtec_mask_path(folder / "ground_truth", type_dir.name, path)
            test.append(Sample(path, 1, mask if mask.is_file() else None, type_dir.name))
    _check_nonempty(folder, train, test)
    return Dataset(category or folder.name, "mvtec", train, test)


# --------------------------------------------------------------------------- VisA


def _visa_csv(root: Path) -> Path:
    return root / "split_csv" / "1cls.csv"


def load_visa(root: Path, category: str | None) -> Dataset:
    """VisA's ``split_csv/1cls.csv`` (columns object, split, label, image, mask; paths relative to ``root``)."""
    root = Path(root)
    table = _visa_csv(root)
    if not category:
        raise ValueError(f"{root} is a VisA dataset: --category is required (an 'object' of {table})")
    train: list[Path] = []
    test: list[Sample] = []
    with open(table, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"object", "split", "label", "image", "mask"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{table}: missing columns {sorted(missing)}")
        for row in reader:
            if row["object"] != category:
                continue
            path = root / row["image"]
            anomalous = row["label"].strip().lower() == "anomaly"
            if row["split"] == "train":
                # VisA's 1cls training split holds normal images only.
                train.append(path)
            elif anomalous:
                mask = root / row["mask"] if row["mask"].strip() else None
                test.append(Sample(path, 1, mask, "anomaly"))
            else:
                test.append(Sample(path, 0))
    if not train and not test:
        raise ValueError(f"{table}: no rows for object {category!r}")
    _check_nonempty(table, train, test)
    return Dataset(category, "visa", train, test)


# --------------------------------------------------------------------------- generic folders


def _first_dir(root: Path, names: tuple[str, ...]) -> Path | None:
    return next((root / name for name in names if (root / name).is_dir()), None)


def _mask_for(image: Path, mask_dir: Path) -> Path | None:
    """``<stem>.png``, ``<stem>_mask.png`` or a same-named file in ``mask_dir``."""
    for name in (image.name, f"{image.stem}.png", f"{image.stem}_mask.png"):
        if (mask_dir / name).is_file():
            return mask_dir / name
    return None


def load_folders(normal_dir: Path, abnormal_dir: Path, mask_dir: Path | None = None, name: str = "folders") -> Dataset:
    """Normal and abnormal images in two folders (masks optional, matched by file name).

    Every :data:`GENERIC_TEST_NORMAL_EVERY`-th normal image (sorted by name) is held out as a
    test normal; the others are the training set.
    """
    normals = _images(Path(normal_dir))
    abnormals = _images(Path(abnormal_dir))
    if not normals or not abnormals:
        raise FileNotFoundError(f"generic layout needs images in both {normal_dir} ({len(normals)} found) "
                                f"and {abnormal_dir} ({len(abnormals)} found)")
    held_out = set(normals[GENERIC_TEST_NORMAL_EVERY - 1 :: GENERIC_TEST_NORMAL_EVERY])
    train = [p for p in normals if p not in held_out]
    test = [Sample(p, 0) for p in normals if p in held_out]
    test += [Sample(p, 1, _mask_for(p, Path(mask_dir)) if mask_dir else None, "abnormal") for p in abnormals]
    return Dataset(name, "folders", train, test)


# --------------------------------------------------------------------------- autodetection


def _check_nonempty(where: Path, train: list[Path], test: list[Sample]) -> None:
    if not train:
        raise ValueError(f"{where}: no training images found")
    if not any(s.label for s in test) or all(s.label for s in test):
        raise ValueError(f"{where}: the test set needs both normal and anomalous images "
                         f"({sum(s.label for s in test)} anomalous of {len(test)})")


def parse_dataset(text: str) -> tuple[Path, str | None]:
    """``ROOT`` or ``ROOT:CATEGORY``, as a command line names a dataset. A colon followed by a path
    (``C:\\data``) or inside an existing folder's name belongs to the root."""
    root, colon, category = text.rpartition(":")
    if not colon or not root or not category or "/" in category or "\\" in category or Path(text).is_dir():
        return Path(text), None
    return Path(root), category


def load_dataset(root: Path, category: str | None = None) -> Dataset:
    """Detect the layout under ``root`` (VisA, MVTec AD, generic folders) and read ``category``."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} is not a folder")
    if _visa_csv(root).is_file():
        return load_visa(root, category)
    if _mvtec_category_dir(root, category) is not None:
        return load_mvtec(root, category)
    base = root / category if category and (root / category).is_dir() else root
    normal_dir, abnormal_dir = _first_dir(base, GENERIC_NORMAL_NAMES), _first_dir(base, GENERIC_ABNORMAL_NAMES)
    if normal_dir and abnormal_dir:
        return load_folders(normal_dir, abnormal_dir, _first_dir(base, GENERIC_MASK_NAMES), category or base.name)
    categories = sorted(folder.name for folder in root.iterdir() if _mvtec_category_dir(folder, None) is not None)
    if categories and category and (root / category).is_dir():
        raise ValueError(f"{root / category}: an MVTec AD category needs train/ and test/ folders")
    if categories:  # an MVTec AD root: the category is missing or misspelt
        wanted = f"no category {category!r}" if category else "several categories"
        raise ValueError(f"{root}: {wanted}; name one as {root}:CATEGORY (found: {', '.join(categories)})")
    raise ValueError(
        f"{base}: no known dataset layout. Expected one of: VisA (split_csv/1cls.csv), MVTec AD "
        f"(<category>/train and <category>/test), or folders {'|'.join(GENERIC_NORMAL_NAMES)}/ and "
        f"{'|'.join(GENERIC_ABNORMAL_NAMES)}/ (masks optional in {'|'.join(GENERIC_MASK_NAMES)}/); "
        f"or give --normal-dir and --abnormal-dir. Image types: {', '.join(sorted(IMAGE_EXTENSIONS))}"
    )
