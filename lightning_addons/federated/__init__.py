"""Federated training of any LightningModule's trainable state.

* :class:`FederatedSimulation`: many clients in one process (research).
* :class:`FederatedDataModule` / :class:`ClientDataModule`: partitioned client data.
* partitioners (:func:`partition`, ...; Flower Datasets' through :func:`flower_partition`),
  :class:`CommunicationMeter` (pure, no Lightning).
* :mod:`lightning_addons.federated.flower`: a Flower ``ClientApp``/``ServerApp`` (extra ``fl``, imported lazily).

The aggregation maths (pure) and the ``fedavg`` Lightning strategy live in :mod:`lightning_addons.strategies`,
which imports nothing from this package. Names load lazily (PEP 562).
"""

from __future__ import annotations

from lightning_addons._lazy import lazy_exports

_EXPORTS = {
    "ClientDataModule": "lightning_addons.federated.data",
    "ClientSampler": "lightning_addons.federated.data",
    "FederatedDataModule": "lightning_addons.federated.data",
    "CommunicationMeter": "lightning_addons.federated.meter",
    "dirichlet_partition": "lightning_addons.federated.partition",
    "flower_partition": "lightning_addons.federated.flwr_partition",
    "plot_label_distribution": "lightning_addons.federated.flwr_partition",
    "iid_partition": "lightning_addons.federated.partition",
    "label_histogram": "lightning_addons.federated.partition",
    "partition": "lightning_addons.federated.partition",
    "pathological_partition": "lightning_addons.federated.partition",
    "plot_label_histogram": "lightning_addons.federated.partition",
    "shard_partition": "lightning_addons.federated.partition",
    "ClientTimeoutError": "lightning_addons.federated.simulation",
    "FederatedCallback": "lightning_addons.federated.simulation",
    "FederatedResult": "lightning_addons.federated.simulation",
    "FederatedSimulation": "lightning_addons.federated.simulation",
    "local_only": "lightning_addons.federated.simulation",
    "ResumeMismatchError": "lightning_addons.federated.simulation",
    "quiet_lightning": "lightning_addons.federated.quiet",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
