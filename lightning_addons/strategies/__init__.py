"""Federated averaging: pure aggregation maths on state dicts (:mod:`~lightning_addons.strategies.aggregation`,
:mod:`~lightning_addons.strategies.state`, no Lightning), the ``fedavg`` Lightning strategy, FedProx.

Importing :mod:`lightning_addons.strategies.fedavg` (or using ``FedAvgStrategy``) registers
``Trainer(strategy="fedavg" | "fedavg_spawn" | "fedavg_fork")``; importing this package registers them too when
Lightning is already loaded (it never loads Lightning itself, so the pure cores stay pure). Names load lazily
(PEP 562). The federated data modules, meter and simulation live in :mod:`lightning_addons.federated`.
"""

from __future__ import annotations

import importlib
import sys

from lightning_addons._lazy import lazy_exports

_EXPORTS = {
    "Aggregator": "lightning_addons.strategies.aggregation",
    "InvalidClientUpdate": "lightning_addons.strategies.aggregation",
    "ServerOptimizer": "lightning_addons.strategies.aggregation",
    "add_gaussian_noise": "lightning_addons.strategies.aggregation",
    "clip_update": "lightning_addons.strategies.aggregation",
    "mean": "lightning_addons.strategies.aggregation",
    "validate_update": "lightning_addons.strategies.aggregation",
    "weighted_average": "lightning_addons.strategies.aggregation",
    "FedAvgStrategy": "lightning_addons.strategies.fedavg",
    "FedProx": "lightning_addons.strategies.fedprox",
    "get_federated_state": "lightning_addons.strategies.state",
    "load_federated_state": "lightning_addons.strategies.state",
    "state_nbytes": "lightning_addons.strategies.state",
    "ClientDP": "lightning_addons.strategies.privacy",
}
#: Names this package re-exported before they moved (warn with the new location).
_MOVED = {
    "ClientDataModule": "lightning_addons.federated.ClientDataModule",
    "FederatedDataModule": "lightning_addons.federated.FederatedDataModule",
    "CommunicationMeter": "lightning_addons.federated.CommunicationMeter",
    "FederatedSimulation": "lightning_addons.federated.FederatedSimulation",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, _MOVED)

if "lightning.pytorch" in sys.modules:  # Lightning is loaded anyway: register "fedavg" now, as before
    importlib.import_module("lightning_addons.strategies.fedavg")
