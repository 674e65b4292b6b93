"""funad: fully unsupervised visual anomaly detection (FUN-AD)."""

from funad._version import __version__
from funad.config import FunADConfig
from funad.model import FunAD

__all__ = ["FunAD", "FunADConfig", "__version__"]
