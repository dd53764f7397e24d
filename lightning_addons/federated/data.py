"""Client data: a per-client LightningDataModule and a partitioned view of any datamodule.

Shuffling is *stateless*: the order of the ``e``-th pass over a client's data depends only on
``(seed, client_id, epoch_offset + e)``. The simulation sets ``epoch_offset = round * local_epochs``
and the ``fedavg`` DDP strategy counts epochs globally, so both draw the same batches and reach the
same global state, and a resumed simulation repeats exactly what an uninterrupted one would do.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from lightning_addons.federated.partition import check_partition, labels_of, partition


class ClientSampler(Sampler[int]):
    """Random permutation per epoch, seeded by ``(seed, client_id, epoch_offset + epoch)``.

    Examples:
        >>> s = ClientSampler(5, seed=0, client_id=1)
        >>> s.set_epoch(2); a = list(s)
        >>> s.epoch_offset, s.epoch = 1, 1; b = list(s)
        >>> a == b
        True
    """

    def __init__(self, num_samples: int, seed: int = 0, client_id: int = 0, shuffle: bool = True) -> None:
        self.num_samples, self.seed, self.client_id, self.shuffle = (
            int(num_samples),
            int(seed),
            int(client_id),
            shuffle,
        )
        self.epoch = 0
        self.epoch_offset = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.num_samples))
        pass_index = self.epoch_offset + self.epoch
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.client_id) * 100_003 + pass_index)
        return iter(torch.randperm(self.num_samples, generator=g).tolist())

    def __len__(self) -> int:
        return self.num_samples


class ClientDataModule(pl.LightningDataModule):
    """One client's private data (train, and optionally its own val/test) with :class:`ClientSampler` shuffling.

    Args:
        train: the client's training dataset.
        val, test: optional evaluation datasets (for federated evaluation).
        batch_size: loader batch size.
        client_id: the client's index (part of the shuffling seed).
        seed: base seed of the shuffling.

    Raises:
        ValueError: empty training set, non-positive batch size.

    Examples:
        >>> from torch.utils.data import TensorDataset
        >>> dm = ClientDataModule(TensorDataset(torch.zeros(6, 2), torch.zeros(6).long()), batch_size=4)
        >>> [len(b[0]) for b in dm.train_dataloader()]
        [4, 2]
    """

    def __init__(
        self,
        train: Dataset,
        val: Dataset | None = None,
        test: Dataset | None = None,
        batch_size: int = 32,
        client_id: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
        if len(train) == 0:
            raise ValueError(f"client {client_id} has an empty training set.")
        self.train_set, self.val_set, self.test_set = train, val, test
        self.batch_size, self.client_id, self.seed = batch_size, client_id, seed
        self.sampler = ClientSampler(len(train), seed=seed, client_id=client_id)

    @property
    def num_samples(self) -> int:
        return len(self.train_set)

    @property
    def epoch_offset(self) -> int:
        return self.sampler.epoch_offset

    @epoch_offset.setter
    def epoch_offset(self, value: int) -> None:
        self.sampler.epoch_offset = int(value)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, sampler=self.sampler)

    # ``None`` (not ``[]``) when a client has no split: modules that look for validation data themselves
    # (e.g. CacheCLIPAdapter's alpha/beta search) then skip it; the runner trains with limit_val_batches=0.
    def val_dataloader(self) -> DataLoader | None:  # type: ignore[override]
        return None if self.val_set is None else DataLoader(self.val_set, batch_size=self.batch_size)

    def test_dataloader(self) -> DataLoader | None:  # type: ignore[override]
        return None if self.test_set is None else DataLoader(self.test_set, batch_size=self.batch_size)


def _dataset(dm: pl.LightningDataModule, split: str) -> Dataset | None:
    getter = getattr(dm, "dataset", None)
    if callable(getter):
        try:
            return getter(split)
        except (ValueError, KeyError):
            return None
    loader_fn = getattr(dm, f"{split}_dataloader", None)
    if loader_fn is None:
        return None
    try:
        loader = loader_fn()
    except (NotImplementedError, AttributeError):
        return None
    return getattr(loader, "dataset", None)


class FederatedDataModule(pl.LightningDataModule):
    """Partitions the training split of any datamodule among ``num_clients`` clients.

    Under the ``fedavg`` strategy each rank is a client: ``client_id=None`` picks ``trainer.global_rank``.
    Validation/test loaders are the wrapped datamodule's (server-side evaluation). :meth:`clients`
    gives one :class:`ClientDataModule` per client for :class:`~lightning_addons.federated.FederatedSimulation`.

    Args:
        datamodule: the datamodule whose ``train`` split is partitioned (``dataset("train")`` or
            ``train_dataloader().dataset``).
        num_clients: number of clients.
        partition: ``"iid"``, ``"dirichlet"``, ``"pathological"`` or ``"shards"`` (in-repo), one of
            ``"flwr-iid"``, ``"flwr-dirichlet"``, ``"flwr-pathological"``, ``"flwr-shards"`` (Flower Datasets'
            partitioners with the arguments below; extra ``fl``), or a mapping ``{class_path, init_args}``
            naming any Flower Datasets partitioner (``num_partitions``, ``partition_by`` and ``seed`` filled
            in from ``num_clients``, the label column and ``partition_seed``).
        alpha, min_size: Dirichlet concentration and minimum client size.
        classes_per_client: for ``"pathological"``.
        shards_per_client: for ``"shards"``.
        partition_seed: seed of the split.
        client_id: this process's client (None: the trainer's global rank).
        batch_size: client batch size (None: the wrapped datamodule's ``batch_size``, else 32).
        local_val_fraction: fraction of each client's partition held out as its local validation set
            (for weighted federated evaluation; 0 for none).
        seed: seed of the clients' shuffling.

    Raises:
        ValueError: bad partition arguments, ``local_val_fraction`` outside [0, 1), a client id outside
            ``[0, num_clients)`` or a world size different from ``num_clients`` under the strategy.

    Examples:
        >>> from lightning_addons.datamodules import DigitsDataModule
        >>> fdm = FederatedDataModule(DigitsDataModule(), num_clients=4, partition="dirichlet", alpha=0.5)
        >>> [c.num_samples for c in fdm.clients()][:2]
        [294, 363]
    """

    def __init__(
        self,
        datamodule: pl.LightningDataModule,
        num_clients: int = 10,
        partition: Literal[
            "iid",
            "dirichlet",
            "pathological",
            "shards",
            "flwr-iid",
            "flwr-dirichlet",
            "flwr-pathological",
            "flwr-shards",
        ]
        | dict[str, Any] = "iid",
        alpha: float = 0.5,
        min_size: int = 10,
        classes_per_client: int = 2,
        shards_per_client: int = 2,
        partition_seed: int = 0,
        client_id: int | None = None,
        batch_size: int | None = None,
        local_val_fraction: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not 0 <= local_val_fraction < 1:
            raise ValueError(f"`local_val_fraction` must be in [0, 1), got {local_val_fraction!r}.")
        if client_id is not None and not (isinstance(client_id, int) and 0 <= client_id < num_clients):
            raise ValueError(f"`client_id` must be in [0, {num_clients}) or None, got {client_id!r}.")
        partition = check_partition(partition)
        self.base = datamodule
        self.num_clients, self.method = num_clients, partition
        self.partition_kwargs = dict(
            alpha=alpha,
            min_size=min_size,
            classes_per_client=classes_per_client,
            shards_per_client=shards_per_client,
        )
        self.partition_seed, self.client_id, self.seed = partition_seed, client_id, seed
        self.local_val_fraction = local_val_fraction
        self.batch_size = batch_size or int(getattr(datamodule, "batch_size", 32) or 32)
        self._parts: list[np.ndarray] | None = None
        self._clients: list[ClientDataModule] | None = None

    # ------------------------------------------------------------------ partitions
    def _train_set(self) -> Dataset:
        self.base.prepare_data()
        self.base.setup("fit")
        ds = _dataset(self.base, "train")
        if ds is None:
            raise ValueError(f"{type(self.base).__name__} exposes no training dataset to partition.")
        return ds

    @property
    def partitions(self) -> list[np.ndarray]:
        """Index arrays into the wrapped training set, one per client."""
        if self._parts is None:
            labels = labels_of(self._train_set())
            self._parts = partition(
                labels, self.num_clients, self.method, self.partition_seed, **self.partition_kwargs
            )
        return self._parts

    def labels(self) -> np.ndarray:
        return labels_of(self._train_set())

    def clients(self) -> list[ClientDataModule]:
        """One :class:`ClientDataModule` per client (built once)."""
        if self._clients is None:
            train = self._train_set()
            out = []
            for k, idx in enumerate(self.partitions):
                val = None
                if self.local_val_fraction > 0:
                    rng = np.random.default_rng(self.seed * 7919 + k)
                    perm = rng.permutation(idx)
                    n_val = max(1, int(round(self.local_val_fraction * len(idx))))
                    idx, val_idx = np.sort(perm[n_val:]), np.sort(perm[:n_val])
                    val = Subset(train, val_idx.tolist())
                out.append(
                    ClientDataModule(
                        Subset(train, idx.tolist()),
                        val=val,
                        batch_size=self.batch_size,
                        client_id=k,
                        seed=self.seed,
                    )
                )
            self._clients = out
        return self._clients

    def client(self, client_id: int) -> ClientDataModule:
        if not (isinstance(client_id, int) and 0 <= client_id < self.num_clients):
            raise ValueError(f"`client_id` must be in [0, {self.num_clients}), got {client_id!r}.")
        return self.clients()[client_id]

    # ------------------------------------------------------------------ Lightning hooks (strategy path)
    def _my_client(self) -> ClientDataModule:
        cid = self.client_id
        if cid is None:
            trainer = self.trainer
            world = trainer.world_size if trainer is not None else 1
            if trainer is not None and world > 1 and world != self.num_clients:
                raise ValueError(
                    f"Under a distributed strategy each rank is one client: world size {world} != "
                    f"`num_clients`={self.num_clients}."
                )
            cid = trainer.global_rank if trainer is not None else 0
        return self.client(cid)

    def setup(self, stage: str | None = None) -> None:
        self.base.setup(stage)

    def train_dataloader(self) -> DataLoader:
        return self._my_client().train_dataloader()

    def val_dataloader(self) -> Any:
        return self.base.val_dataloader()

    def test_dataloader(self) -> Any:
        return self.base.test_dataloader()


def client_sizes(clients: Sequence[ClientDataModule]) -> list[int]:
    return [c.num_samples for c in clients]
