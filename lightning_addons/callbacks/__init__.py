"""Callbacks of lightning-addons (Lightning shells over the pure cores). Each imports no optional dependency at
module level; names load lazily (PEP 562), so importing one callback module loads no sibling."""

from __future__ import annotations

from lightning_addons._lazy import lazy_exports

_EXPORTS = {
    "EnergyMeter": "lightning_addons.callbacks.energy",
    "FlopsProfiler": "lightning_addons.callbacks.flops",
    "GMMFilterAuditor": "lightning_addons.callbacks.gmm_auditor",
    "AnomalyFilterPruning": "lightning_addons.callbacks.pruning",
    "CheckpointDigest": "lightning_addons.callbacks.checkpoint_digest",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
