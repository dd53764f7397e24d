"""Partitioners (coverage, skew, seeds, errors), the label histogram and the CommunicationMeter."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_addons.federated import (
    CommunicationMeter,
    dirichlet_partition,
    iid_partition,
    label_histogram,
    partition,
    pathological_partition,
    plot_label_histogram,
    shard_partition,
)

LABELS = np.repeat(np.arange(10), 60)


def _is_exact_cover(parts, n):
    allidx = np.concatenate(parts)
    return len(allidx) == n and len(np.unique(allidx)) == n


@pytest.mark.stochastic
@pytest.mark.parametrize("method", ["iid", "dirichlet", "pathological", "shards"])
def test_every_partitioner_assigns_each_sample_to_exactly_one_client(method, seed_offset):
    parts = partition(LABELS, 10, method, seed=1 + seed_offset, alpha=0.5, min_size=5)
    assert len(parts) == 10 and _is_exact_cover(parts, len(LABELS))
    again = partition(LABELS, 10, method, seed=1 + seed_offset, alpha=0.5, min_size=5)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))


@pytest.mark.stochastic
def test_dirichlet_skew_grows_as_alpha_shrinks_and_respects_min_size(seed_offset):
    def mean_max_share(alpha):
        parts = dirichlet_partition(LABELS, 10, alpha=alpha, min_size=5, seed=seed_offset)
        hist = label_histogram(LABELS, parts)
        return float((hist.max(1) / hist.sum(1)).mean())

    assert mean_max_share(0.1) > mean_max_share(0.5) > mean_max_share(100.0)
    parts = dirichlet_partition(LABELS, 10, alpha=0.1, min_size=20, seed=seed_offset)
    assert min(len(p) for p in parts) >= 20


@pytest.mark.stochastic
def test_pathological_gives_each_client_exactly_c_classes(seed_offset):
    parts = pathological_partition(LABELS, 10, classes_per_client=2, seed=seed_offset)
    assert all(len(np.unique(LABELS[p])) == 2 for p in parts)


@pytest.mark.stochastic
def test_iid_and_shards_balance_sizes(seed_offset):
    assert {len(p) for p in iid_partition(LABELS, 6, seed=seed_offset)} == {100}
    hist = label_histogram(LABELS, shard_partition(LABELS, 10, shards_per_client=2, seed=seed_offset))
    assert (hist.sum(1) == 60).all() and ((hist > 0).sum(1) <= 4).all()


def test_partition_reads_labels_from_a_dataset():
    from torch.utils.data import TensorDataset

    ds = TensorDataset(torch.zeros(len(LABELS), 2), torch.from_numpy(LABELS))
    assert _is_exact_cover(iid_partition(ds, 4), len(LABELS))


def test_bad_partition_arguments_raise_clear_errors():
    with pytest.raises(
        ValueError,
        match=r"`partition` must be one of \['iid', 'dirichlet', 'pathological', 'shards', 'flwr-iid', "
        r"'flwr-dirichlet', 'flwr-pathological', 'flwr-shards'\] or a \{class_path, init_args\} mapping, got 'x'",
    ):
        partition(LABELS, 3, "x")
    with pytest.raises(ValueError, match=r"`alpha` must be > 0, got 0"):
        dirichlet_partition(LABELS, 3, alpha=0)
    with pytest.raises(ValueError, match=r"`num_clients` must be a positive integer, got 0"):
        iid_partition(LABELS, 0)
    with pytest.raises(ValueError, match=r"`min_size`=500 x `num_clients`=10 exceeds"):
        dirichlet_partition(LABELS, 10, min_size=500)
    with pytest.raises(ValueError, match=r"`classes_per_client` must be an integer in \[1, 10\], got 11"):
        pathological_partition(LABELS, 5, classes_per_client=11)
    with pytest.raises(ValueError, match=r"cannot cover the 10 classes"):
        pathological_partition(LABELS, 2, classes_per_client=2)


def test_label_histogram_plot_is_written(tmp_path):
    path = tmp_path / "hist.png"
    plot_label_histogram(LABELS, dirichlet_partition(LABELS, 5, alpha=0.3, min_size=5), path=str(path))
    assert path.stat().st_size > 1000


def test_meter_counts_exact_dtype_aware_bytes():
    meter = CommunicationMeter(full_model_bytes=10_000)
    n, k, c = 10, 4, 64  # a cache of N*K keys of dimension C
    cache = {"keys": torch.zeros(n * k, c)}
    for rnd in range(3):
        for client in range(5):
            meter.record(rnd, client, down=cache, up=cache)
    assert meter.bytes_up == 3 * 5 * n * k * c * 4
    assert meter.bytes_per_client_round() == 2 * n * k * c * 4
    assert meter.cumulative() == [2 * 5 * n * k * c * 4 * (r + 1) for r in range(3)]
    assert meter.ratio_to_full() == pytest.approx(10_000 / (n * k * c * 4))
    half = CommunicationMeter()
    half.record(0, 0, {"w": torch.zeros(10, dtype=torch.float16)})
    assert half.total_bytes == 20
    with pytest.raises(ValueError, match="`full_model_bytes` is not set"):
        half.ratio_to_full()
    restored = CommunicationMeter()
    restored.load_state_dict(meter.state_dict())
    assert restored.summary() == meter.summary()
