"""Federated averaging: pure aggregation maths on state dicts, the ``fedavg`` Lightning strategy, FedProx.

Importing this package registers ``Trainer(strategy="fedavg" | "fedavg_spawn" | "fedavg_fork")`` and the
``lightning-addons federate`` subcommand. It imports no optional dependency (Flower is imported lazily
by :mod:`lightning_addons.federated.flower`).
"""

from lightning.pytorch.strategies import StrategyRegistry

from lightning_addons.cli import register_command
from lightning_addons.federated.data import ClientDataModule, FederatedDataModule
from lightning_addons.federated.meter import CommunicationMeter
from lightning_addons.strategies.aggregation import (
    Aggregator,
    InvalidClientUpdate,
    ServerOptimizer,
    add_gaussian_noise,
    clip_update,
    mean,
    validate_update,
    weighted_average,
)
from lightning_addons.strategies.fedavg import FedAvgStrategy
from lightning_addons.strategies.fedprox import FedProx
from lightning_addons.strategies.privacy import ClientDP
from lightning_addons.strategies.state import get_federated_state, load_federated_state

FedAvgStrategy.register_strategies(StrategyRegistry)
register_command("federate", "lightning_addons.federated.cli:main")


def __getattr__(name: str):
    # The simulation runner lives in lightning_addons.federated (it imports this package: lazy to avoid a cycle).
    if name == "FederatedSimulation":
        from lightning_addons.federated.simulation import FederatedSimulation

        return FederatedSimulation
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Aggregator",
    "ClientDP",
    "ClientDataModule",
    "CommunicationMeter",
    "FederatedDataModule",
    "FederatedSimulation",
    "FedAvgStrategy",
    "FedProx",
    "InvalidClientUpdate",
    "ServerOptimizer",
    "add_gaussian_noise",
    "clip_update",
    "get_federated_state",
    "load_federated_state",
    "mean",
    "validate_update",
    "weighted_average",
]
