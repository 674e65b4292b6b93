"""Versions of funad and the packages that shape its numbers, recorded beside saved models and results."""

from __future__ import annotations

from importlib import metadata

from funad._version import __version__

_RECORDED_PACKAGES = ("torch", "timm", "numpy", "faiss-cpu", "safetensors", "scikit-learn", "onnxruntime")


def package_versions() -> dict[str, str]:
    # funad's own version from the code that ran (it may run from a source tree, uninstalled).
    versions = {"funad": __version__}
    for name in _RECORDED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
