"""Frozen feature extractors behind one interface (:mod:`.base`), built by name (:mod:`.registry`)."""

from funad.features.backbones.base import Backbone, Preprocessing
from funad.features.backbones.registry import create_backbone, list_backbones

__all__ = ["Backbone", "Preprocessing", "create_backbone", "list_backbones"]
