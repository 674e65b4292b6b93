import csv
import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from funad.config import FunADConfig
from funad.inference.scorers.knn import CORROBORATION_VIEWS

torch.set_num_threads(2)


def benchmark_script(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` as a module (benchmarks/ is no package); registered as ``name``, as dataclasses
    defined in a script need."""
    path = Path(__file__).parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory):
    """A tiny contaminated dataset (real texture photos, synthetic defects) shared by the slow tests."""
    from funad.data.synthetic import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("demo"), seed=0, image_size=64, n_train_normal=18,
                             n_train_anomalous=2, n_test_normal=4, n_test_anomalous=4)


# Small and fast: the small CNN at 64 px inputs (an 8x8 grid), two epochs, no worker processes, no cache.
TINY = dict(backbone="efficientnet_lite0", image_size=64, epochs=2, batch_size=8, patches_per_image=16, num_workers=0,
            batch_size_extract=8)
#: Feature extractions per default fit: the training images, then each pose the default scorer vouches with.
EXTRACTIONS_PER_FIT = 1 + len(CORROBORATION_VIEWS[FunADConfig().knn_corroboration_views])


def _cli_flags(settings: dict) -> list[str]:
    return [item for key, value in settings.items() for item in ("--" + key.replace("_", "-"), str(value))]


@pytest.fixture
def photos_of_two_shapes(demo_data, tmp_path):
    """The demo dataset with two of every three training photos cut to 4:3 (64 x 48): letterboxed, median ratio
    4:3."""
    from PIL import Image

    root = tmp_path / "shapes"
    shutil.copytree(demo_data.root, root)
    for index, path in enumerate(sorted((root / "train").rglob("*.png"))):
        if index % 3:
            Image.open(path).crop((0, 0, 64, 48)).save(path)
    return root


@pytest.fixture(scope="session")
def cli_flags():
    """``settings`` as command-line flags: ``{"image_size": 64}`` -> ``["--image-size", "64"]``."""
    return _cli_flags


@pytest.fixture(scope="session")
def tiny_cli_flags():
    """TINY as ``funad fit`` flags (the feature batch size is no flag)."""
    return _cli_flags({k: v for k, v in TINY.items() if k != "batch_size_extract"})


@pytest.fixture(scope="session")
def read_csv():
    """A CSV file's rows as dicts."""
    def read(path):
        with open(path, newline="") as handle:
            return list(csv.DictReader(handle))
    return read


def fit_save_and_export(train_dir, folder, **settings):
    """A tiny model (TINY and ``settings``) fitted on ``train_dir``, saved to ``folder/model`` and exported with the
    command line to ``folder/model.onnx``."""
    from funad import FunAD
    from funad.cli import main

    model = FunAD(pretrained=False, progress=False, **TINY, **settings).fit(train_dir)
    model.save(folder / "model")
    assert main(["--quiet", "export", str(folder / "model"), "--format", "onnx", "--out",
                 str(folder / "model.onnx")]) == 0
    return model, folder
