"""Callbacks of lightning-addons. Each imports no optional dependency at module level."""

from lightning_addons.callbacks.checkpoint_digest import CheckpointDigest
from lightning_addons.callbacks.energy import EnergyMeter
from lightning_addons.callbacks.flops import FlopsProfiler
from lightning_addons.callbacks.gmm_auditor import GMMFilterAuditor
from lightning_addons.callbacks.pruning import AnomalyFilterPruning

__all__: list[str] = ["AnomalyFilterPruning", "CheckpointDigest", "EnergyMeter", "FlopsProfiler", "GMMFilterAuditor"]
