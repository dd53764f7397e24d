"""LightningModules. Pure-torch blocks live in :mod:`lightning_addons.modules.nn`."""

from lightning_addons.modules.cache_clip import CacheCLIPAdapter
from lightning_addons.modules.classifier import ImageClassifier
from lightning_addons.modules.forecaster import Forecaster

__all__ = ["CacheCLIPAdapter", "Forecaster", "ImageClassifier"]
