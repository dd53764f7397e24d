"""Experiment drivers: scripts that run a study end to end on the public API of the library (integration
layer, beside the CLI; nothing in the library imports them).

* :func:`run_cachefl` (:mod:`lightning_addons.experiments.cachefl`): the CacheFL experiment, run by
  ``lightning-addons federate`` for a config with a ``cachefl:`` section.

Names load lazily (PEP 562).
"""

from __future__ import annotations

from lightning_addons._lazy import lazy_exports

_EXPORTS = {
    "CachedFeaturesDataModule": "lightning_addons.experiments.cachefl",
    "FullEncoderClassifier": "lightning_addons.experiments.cachefl",
    "TensorSplitsDataModule": "lightning_addons.experiments.cachefl",
    "build_world": "lightning_addons.experiments.cachefl",
    "client_datamodules": "lightning_addons.experiments.cachefl",
    "feature_world_adapter": "lightning_addons.experiments.cachefl",
    "format_table": "lightning_addons.experiments.cachefl",
    "load_feature_world": "lightning_addons.experiments.cachefl",
    "run_cachefl": "lightning_addons.experiments.cachefl",
    "save_feature_world": "lightning_addons.experiments.cachefl",
    "summarise": "lightning_addons.experiments.cachefl",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
