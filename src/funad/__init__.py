"""funad: fully unsupervised visual anomaly detection (FUN-AD)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from funad._version import __version__

if TYPE_CHECKING:
    from funad.config import FunADConfig
    from funad.model import FunAD

__all__ = ["FunAD", "FunADConfig", "__version__"]


def __getattr__(name: str) -> Any:
    """``FunAD`` and ``FunADConfig`` on first use: importing funad (e.g. funad.runtime) must not import torch."""
    if name == "FunAD":
        from funad.model import FunAD

        return FunAD
    if name == "FunADConfig":
        from funad.config import FunADConfig

        return FunADConfig
    raise AttributeError(f"module 'funad' has no attribute {name!r}")
