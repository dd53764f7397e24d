"""Federated training of any LightningModule's trainable state.

* :class:`FederatedSimulation`: many clients in one process (research).
* :class:`FederatedDataModule` / :class:`ClientDataModule`: partitioned client data.
* partitioners (:func:`partition`, ...), :class:`CommunicationMeter`.
* :mod:`lightning_addons.federated.flower`: a Flower ``ClientApp``/``ServerApp`` (extra ``fl``, imported lazily).

The aggregation maths and the ``fedavg`` Lightning strategy live in :mod:`lightning_addons.strategies`.
"""

from lightning_addons.federated.data import ClientDataModule, ClientSampler, FederatedDataModule
from lightning_addons.federated.meter import CommunicationMeter
from lightning_addons.federated.partition import (
    dirichlet_partition,
    iid_partition,
    label_histogram,
    partition,
    pathological_partition,
    plot_label_histogram,
    shard_partition,
)
from lightning_addons.federated.simulation import (
    ClientTimeoutError,
    FederatedCallback,
    FederatedResult,
    FederatedSimulation,
    ResumeMismatchError,
    local_only,
)

__all__ = [
    "ClientDataModule",
    "ClientSampler",
    "ClientTimeoutError",
    "CommunicationMeter",
    "FederatedCallback",
    "FederatedDataModule",
    "FederatedResult",
    "FederatedSimulation",
    "ResumeMismatchError",
    "dirichlet_partition",
    "iid_partition",
    "label_histogram",
    "local_only",
    "partition",
    "pathological_partition",
    "plot_label_histogram",
    "shard_partition",
]
