"""LightningModules (shells). Pure-torch blocks live in :mod:`lightning_addons.modules.nn`, which imports no
Lightning: names here load lazily (PEP 562), so ``import lightning_addons.modules.nn`` stays pure."""

from __future__ import annotations

from lightning_addons._lazy import lazy_exports

_EXPORTS = {
    "AdapterCLIPClassifier": "lightning_addons.modules.clip_tuning",
    "CacheCLIPAdapter": "lightning_addons.modules.cache_clip",
    "ImageClassifier": "lightning_addons.modules.classifier",
    "Forecaster": "lightning_addons.modules.forecaster",
    "PromptCLIPClassifier": "lightning_addons.modules.clip_tuning",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
