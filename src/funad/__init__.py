"""funad: fully unsupervised visual anomaly detection (FUN-AD)."""

from funad.config import FunADConfig
from funad.model import FunAD

__all__ = ["FunAD", "FunADConfig"]
__version__ = "0.1.0"
