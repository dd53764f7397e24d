"""Flower Datasets' partitioners behind the project's partition config: each client's index list is exactly
what the Flower partitioner itself gives on a Hugging Face ``datasets.Dataset`` with a row-index column, in the
simulation and in the Flower apps (both build their clients with ``build_simulation``); the in-repo
partitioners are checked against Flower's where the two can agree."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest

flwr_partitioner = pytest.importorskip("flwr_datasets.partitioner")
datasets = pytest.importorskip("datasets")

from lightning_addons.federated import (  # noqa: E402
    FederatedDataModule,
    flower_partition,
    iid_partition,
    label_histogram,
    partition,
    plot_label_distribution,
    shard_partition,
)
from lightning_addons.federated.config import build_simulation, load_config  # noqa: E402

# 610 shuffled labels of 10 classes: not a multiple of 20 shards, so ShardPartitioner drops a remainder.
LABELS = np.random.default_rng(0).permutation(np.repeat(np.arange(10), 61))


def _flower_direct(partitioner, labels) -> list[list[int]]:
    """The Flower partitioner called directly, as its documentation does, on a Dataset with a row column."""
    partitioner.dataset = datasets.Dataset.from_dict(
        {"label": labels.tolist(), "row": list(range(len(labels)))}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return [list(partitioner.load_partition(k)["row"]) for k in range(partitioner.num_partitions)]


def _ours(*args, **kwargs) -> list[list[int]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the ShardPartitioner remainder warning
        return [p.tolist() for p in partition(*args, **kwargs)]


NAMED = {
    "flwr-iid": lambda s: flwr_partitioner.IidPartitioner(10),
    "flwr-dirichlet": lambda s: flwr_partitioner.DirichletPartitioner(
        10, "label", alpha=0.3, min_partition_size=5, seed=s
    ),
    "flwr-pathological": lambda s: flwr_partitioner.PathologicalPartitioner(
        10, "label", num_classes_per_partition=3, seed=s
    ),
    "flwr-shards": lambda s: flwr_partitioner.ShardPartitioner(
        10, "label", num_shards_per_partition=2, seed=s
    ),
}


@pytest.mark.parametrize("seed", [0, 7])
@pytest.mark.parametrize("method", sorted(NAMED))
def test_named_flower_partitions_are_exactly_flowers_index_lists(method, seed):
    ours = _ours(
        LABELS, 10, method, seed=seed, alpha=0.3, min_size=5, classes_per_client=3, shards_per_client=2
    )
    assert ours == _flower_direct(NAMED[method](seed), LABELS)


SPECS = [
    (
        {"class_path": "DirichletPartitioner", "init_args": {"alpha": 0.5, "self_balancing": True}},
        lambda: flwr_partitioner.DirichletPartitioner(8, "label", alpha=0.5, self_balancing=True, seed=4),
    ),
    (
        {"class_path": "flwr_datasets.partitioner.LinearPartitioner"},
        lambda: flwr_partitioner.LinearPartitioner(8),
    ),
    (
        {
            "class_path": "InnerDirichletPartitioner",
            "init_args": {"partition_sizes": [100] * 6 + [5, 5], "alpha": 1},
        },
        lambda: flwr_partitioner.InnerDirichletPartitioner([100] * 6 + [5, 5], "label", alpha=1, seed=4),
    ),
]


@pytest.mark.parametrize("spec,direct", SPECS, ids=["dirichlet-balanced", "linear", "inner-dirichlet"])
def test_class_path_partitioners_are_exactly_flowers_index_lists(spec, direct):
    assert _ours(LABELS, 8, spec, seed=4) == _flower_direct(direct(), LABELS)


def test_flower_shards_warn_about_the_samples_left_on_no_client():
    with pytest.warns(UserWarning, match=r"ShardPartitioner left 10 of 610 samples on no client"):
        parts = flower_partition(LABELS, 10, "flwr-shards", seed=0, shards_per_client=2)
    assert sum(len(p) for p in parts) == 600


def test_simulation_and_flower_app_clients_train_on_flowers_partition():
    cfg = load_config(
        {
            "seed": 0,
            "model": {"class_path": "ImageClassifier", "init_args": {"model": {"class_path": "LeNet5"}}},
            "data": {"class_path": "DigitsDataModule", "init_args": {"resize": 32}},
            "federation": {
                "num_clients": 4,
                "partition": {"class_path": "DirichletPartitioner", "init_args": {"alpha": 0.5}},
                "partition_seed": 3,
            },
        }
    )
    sim = build_simulation(cfg, progress_bar=False)  # what the ServerApp and every ClientApp build
    labels = sim.federated_datamodule.labels()
    direct = _flower_direct(flwr_partitioner.DirichletPartitioner(4, "label", alpha=0.5, seed=3), labels)
    assert [list(c.train_set.indices) for c in sim.clients] == direct
    assert sim.fingerprint()["partition.method.class_path"] == "'DirichletPartitioner'"


def test_federated_datamodule_takes_a_flower_name():
    from lightning_addons.datamodules import DigitsDataModule

    fdm = FederatedDataModule(
        DigitsDataModule(), num_clients=5, partition="flwr-pathological", partition_seed=1
    )
    with pytest.warns(UserWarning, match=r"PathologicalPartitioner left 382 of 1257 samples on no client"):
        assert fdm.partitions  # Flower's random class assignment leaves classes 1, 3 and 6 unused here
    direct = _flower_direct(flwr_partitioner.PathologicalPartitioner(5, "label", 2, seed=1), fdm.labels())
    assert [p.tolist() for p in fdm.partitions] == direct


def test_bad_flower_partition_choices_fail_before_any_data_is_read():
    base = {"model": {"class_path": "LeNet5"}, "data": {"class_path": "DigitsDataModule"}}

    def load(partition):
        return load_config({**base, "federation": {"partition": partition}})

    with pytest.raises(
        ValueError,
        match=r"`federation.partition` must be one of .*'flwr-shards'.* did you mean 'flwr-dirichlet'\?",
    ):
        load("flwr-dirichlt")
    with pytest.raises(ValueError, match=r"got 'DirichletPartioner'. did you mean 'DirichletPartitioner'\?"):
        load({"class_path": "DirichletPartioner"})
    with pytest.raises(
        ValueError,
        match=r"`federation.partition.class_path` must name a Flower Datasets partitioner of samples .*got 'collections.OrderedDict'",
    ):
        load({"class_path": "collections.OrderedDict"})
    with pytest.raises(ValueError, match=r"partitioner of samples .*got 'VerticalEvenPartitioner'"):
        load({"class_path": "VerticalEvenPartitioner"})  # splits columns: every client would get every sample
    with pytest.raises(
        ValueError,
        match=r"Unknown `federation.partition.init_args` \['alpah'\] for DirichletPartitioner; allowed: \[",
    ):
        load({"class_path": "DirichletPartitioner", "init_args": {"alpah": 0.1}})
    with pytest.raises(ValueError, match=r"`federation.partition` must be a name or a mapping \{class_path"):
        load({"name": "DirichletPartitioner"})
    with pytest.raises(
        ValueError, match=r"`partition.init_args.num_partitions`=3 differs from `num_clients`=4"
    ):
        partition(LABELS, 4, {"class_path": "IidPartitioner", "init_args": {"num_partitions": 3}})
    with pytest.raises(
        ValueError, match=r"`partition.init_args.partition_by` must be 'label' \(the label column\), got 'y'"
    ):
        partition(
            LABELS, 4, {"class_path": "ShardPartitioner", "init_args": {"partition_by": "y", "shard_size": 5}}
        )
    with pytest.raises(
        ValueError,
        match=r"Flower's PathologicalPartitioner .* cannot split 610 samples: .*num_classes_per_partition",
    ):
        partition(LABELS, 4, "flwr-pathological", classes_per_client=11)


def test_missing_flower_datasets_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "flwr_datasets.partitioner", None)
    with pytest.raises(ModuleNotFoundError, match=r"'flwr-datasets'.*pip install 'lightning-addons\[fl\]'"):
        load_config({"model": {}, "data": {}, "federation": {"partition": "flwr-iid"}})


def test_in_repo_shards_equal_flowers_shards_as_sets_when_the_shards_divide_the_data():
    y = LABELS[:600]
    for seed in range(3):
        ours = [sorted(p.tolist()) for p in shard_partition(y, 10, shards_per_client=3, seed=seed)]
        flower = [
            sorted(p) for p in _flower_direct(flwr_partitioner.ShardPartitioner(10, "label", 3, seed=seed), y)
        ]
        assert ours == flower


def test_in_repo_iid_is_flowers_iid_on_the_seeded_shuffle():
    for seed in range(3):
        perm = np.random.default_rng(seed).permutation(len(LABELS))
        flower = _flower_direct(flwr_partitioner.IidPartitioner(7), LABELS[perm])
        assert [p.tolist() for p in iid_partition(LABELS, 7, seed=seed)] == [
            sorted(perm[f].tolist()) for f in flower
        ]


def test_flowers_label_plot_counts_equal_the_label_histogram(tmp_path):
    for parts in (
        partition(LABELS, 6, "dirichlet", seed=2, alpha=0.3, min_size=5),
        flower_partition(LABELS, 6, "flwr-dirichlet", seed=2, alpha=0.3, min_size=5),
    ):
        path = tmp_path / "labels.png"
        fig, ax, counts = plot_label_distribution(LABELS, parts, path=str(path))
        assert counts.to_numpy().tolist() == label_histogram(LABELS, parts).tolist()
        assert ax.get_xlabel() == "client" and path.stat().st_size > 1000
