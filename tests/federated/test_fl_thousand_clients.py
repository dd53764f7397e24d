"""1,000 virtual clients in one process on cached CLIP features: 10% sampled per round, their updates averaged by
size, and no tensor kept per client (the runner's memory does not grow with the federation's size)."""

from __future__ import annotations

import copy
import gc
import math

import pytest
import torch
from torch.utils.data import Subset, TensorDataset

pytest.importorskip("open_clip")

from lightning_addons.federated import ClientDataModule, FederatedSimulation  # noqa: E402
from lightning_addons.federated.partition import dirichlet_partition  # noqa: E402
from lightning_addons.federated.simulation import FederatedCallback  # noqa: E402
from lightning_addons.strategies import Aggregator  # noqa: E402
from lightning_addons.strategies.state import get_federated_state, state_nbytes  # noqa: E402

CLIENTS, FRACTION, ROUNDS, PER_CLIENT = 1000, 0.1, 2, 20


def live_tensor_bytes() -> int:
    """Bytes of every distinct tensor storage reachable from Python objects (after a full collection)."""
    gc.collect()
    seen: dict[int, int] = {}
    for obj in gc.get_objects():
        if issubclass(type(obj), torch.Tensor) and obj.device.type == "cpu":
            try:
                storage = obj.untyped_storage()
            except (RuntimeError, NotImplementedError):  # tensors without storage (e.g. sparse, meta)
                continue
            seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


class Recorder(FederatedCallback):
    """Each sampled client's trained federated state (by round) and the live tensor bytes after every round."""

    def __init__(self, keep_states: bool) -> None:
        self.keep_states = keep_states
        self.states: dict[tuple[int, int], dict[str, torch.Tensor]] = {}
        self.sampled: dict[int, list[int]] = {}
        self.live_after_round: list[int] = []

    def on_round_start(self, simulation, round, clients) -> None:
        self.sampled[round] = list(clients)

    def on_client_end(self, simulation, round, client, module) -> None:
        if self.keep_states:
            self.states[(round, client)] = get_federated_state(module)

    def on_round_end(self, simulation, round, metrics) -> None:
        if not self.keep_states:  # (the kept states are, by design, memory that grows)
            self.live_after_round.append(live_tensor_bytes())


@pytest.fixture(scope="module")
def cached_features():
    """The tiny CLIP's features of scikit-learn's digits, resampled to 20 per client (one shared tensor)."""
    from lightning_addons.data import load_digits_arrays
    from lightning_addons.modules import CacheCLIPAdapter

    images, labels = load_digits_arrays()
    torch.manual_seed(0)
    adapter = CacheCLIPAdapter(search_alpha_beta=False, scheduler="none")
    feats = adapter.encode_images(torch.from_numpy(images).unsqueeze(1))
    y = torch.from_numpy(labels)
    shots = torch.cat([torch.nonzero(y == c).flatten()[:2] for c in range(10)])
    adapter.set_cache(feats[shots], y[shots])
    g = torch.Generator().manual_seed(0)
    pick = torch.randint(len(feats), (CLIENTS * PER_CLIENT,), generator=g)
    return adapter, feats[pick].contiguous(), y[pick].contiguous()


def federation(adapter, x, y, num_clients: int, keep_states: bool, seed: int, aggregator=None):
    parts = dirichlet_partition(y.numpy(), num_clients, alpha=0.5, min_size=2, seed=seed)
    data = TensorDataset(x, y)  # every client a Subset of one shared dataset: no per-client copy
    clients = [
        ClientDataModule(Subset(data, p.tolist()), batch_size=32, client_id=k, seed=seed)
        for k, p in enumerate(parts)
    ]
    recorder = Recorder(keep_states)
    sim = FederatedSimulation(
        copy.deepcopy(adapter),
        clients,
        rounds=ROUNDS,
        local_epochs=1,
        fraction_fit=FRACTION,
        progress_bar=False,
        seed=seed,
        callbacks=[recorder],
        aggregator=aggregator,
    )
    return sim, recorder, clients


@pytest.mark.stochastic
def test_a_thousand_client_round_samples_a_tenth_and_averages_their_updates_by_sample_count(
    cached_features, seed_offset
):
    adapter, x, y = cached_features
    plain_fedavg = Aggregator(
        max_norm_ratio=None
    )  # the norm guard (tested elsewhere) off: every update averaged
    sim, rec, clients = federation(adapter, x, y, CLIENTS, True, seed_offset, aggregator=plain_fedavg)
    start = {k: v.clone() for k, v in sim.global_state.items()}
    states_by_round = []
    for rnd in range(ROUNDS):  # the loop of fit(), one round at a time, to see every round's global state
        before = {k: v.clone() for k, v in sim.global_state.items()}
        record = sim.run_round(rnd)
        sim.history.append(record)
        states_by_round.append((before, record, {k: v.clone() for k, v in sim.global_state.items()}))

    expected = math.ceil(FRACTION * CLIENTS)
    assert [len(rec.sampled[r]) for r in range(ROUNDS)] == [expected] * ROUNDS
    for r in range(ROUNDS):
        sampled = rec.sampled[r]
        assert sampled == sorted(set(sampled)) and 0 <= sampled[0] and sampled[-1] < CLIENTS
        assert sampled == sim.sample_clients(r)  # seeded by (seed, round): reproducible
    assert rec.sampled[0] != rec.sampled[1]  # a new draw every round
    assert len(sim.meter.records) == ROUNDS * expected  # traffic of the sampled clients only
    state_bytes = state_nbytes(start)
    assert all(r["down"] == state_bytes and r["up"] == state_bytes for r in sim.meter.records)

    for rnd, (before, record, after) in enumerate(states_by_round):
        kept = record["clients"]
        assert kept == rec.sampled[rnd] and record["dropped"] == [] and record["rejected"] == []
        sizes = torch.tensor([float(clients[c].num_samples) for c in kept], dtype=torch.float64)
        assert record["num_samples"] == [clients[c].num_samples for c in kept]
        assert len(set(sizes.tolist())) > 1  # unequal clients: a weighted and a plain mean differ
        for key, value in after.items():
            stacked = torch.stack([rec.states[(rnd, c)][key].double() for c in kept])
            reference = torch.tensordot(sizes / sizes.sum(), stacked, dims=1)
            torch.testing.assert_close(value.double(), reference, rtol=1e-6, atol=1e-7)
            assert not torch.allclose(value.double(), stacked.mean(0), rtol=1e-6, atol=1e-7)
            assert not torch.equal(value, before[key])


def test_the_runner_keeps_no_tensor_per_client_so_memory_does_not_grow_with_the_federation(cached_features):
    adapter, x, y = cached_features
    grown = {}
    for n in (CLIENTS // 10, CLIENTS):  # 100 vs 1,000 clients, 10% sampled per round in both
        sim, rec, _ = federation(adapter, x, y, n, keep_states=False, seed=0)
        baseline = live_tensor_bytes()
        sim.fit()
        grown[n] = [b - baseline for b in rec.live_after_round]
        del sim, rec
    state_bytes = state_nbytes(get_federated_state(adapter))
    # No per-round accumulation: what the run holds after its last round is what it held after its first.
    for n, series in grown.items():
        assert abs(series[-1] - series[0]) <= state_bytes, (n, series)
    # No per-client retention: ten times the clients (and ten times the sampled clients per round) leave at most
    # one federated state more alive; keeping each sampled client's update would add 90 states (3.7 MB here).
    assert grown[CLIENTS][-1] - grown[CLIENTS // 10][-1] <= state_bytes, grown
