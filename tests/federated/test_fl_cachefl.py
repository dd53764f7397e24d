"""CacheFL on the embedded tiny world: only the cache keys move (N*K*C*4 bytes), CLIP and values never change."""

from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("open_clip")

from lightning_addons.experiments import TensorSplitsDataModule, build_world, client_datamodules  # noqa: E402
from lightning_addons.federated import ClientDataModule, FederatedSimulation  # noqa: E402
from lightning_addons.federated.partition import dirichlet_partition  # noqa: E402


@pytest.fixture(scope="module")
def world(seed_offset):
    return build_world(shots=4, fidelity_filter=False, seed=seed_offset)


@pytest.mark.stochastic
def test_cachefl_moves_exactly_the_cache_and_never_touches_clip(world, seed_offset):
    adapter, feats, _ = world
    n, k, c = adapter.num_classes, 4, adapter.feature_dim
    clip_before = {k_: v.clone() for k_, v in adapter.clip.state_dict().items()}
    values_before = adapter.cache_values.clone()
    x, y = feats["train"]
    parts = dirichlet_partition(y.numpy(), 3, alpha=0.5, min_size=10, seed=seed_offset)
    module = copy.deepcopy(adapter)
    sim = FederatedSimulation(
        module,
        client_datamodules(x, y, parts, 32, seed_offset),
        rounds=2,
        local_epochs=2,
        seed=seed_offset,
        eval_datamodule=TensorSplitsDataModule(feats),
        progress_bar=False,
    )
    result = sim.fit()
    assert list(result.global_state) == ["cache_keys"]
    assert all(r["up"] == n * k * c * 4 and r["down"] == n * k * c * 4 for r in sim.meter.records)
    assert len(sim.meter.records) == 2 * 3
    assert not torch.equal(result.global_state["cache_keys"], adapter.cache_keys.detach())  # keys trained
    assert torch.equal(module.cache_values, values_before)
    clip_after = module.clip.state_dict()
    assert all(torch.equal(clip_before[k_], clip_after[k_]) for k_ in clip_before)
    assert 0.5 < result.test_metrics["test_acc"] <= 1.0


@pytest.mark.stochastic
def test_one_client_cachefl_equals_centralised_cache_fine_tuning(world, seed_offset):
    import lightning.pytorch as pl

    adapter, feats, _ = world
    x, y = feats["train"]
    fed = copy.deepcopy(adapter)
    central = copy.deepcopy(adapter)
    data = ClientDataModule(torch.utils.data.TensorDataset(x, y), batch_size=32)
    FederatedSimulation(fed, [data], rounds=1, local_epochs=3, seed=2 + seed_offset, progress_bar=False).fit()
    pl.seed_everything(2 + seed_offset, verbose=False)
    pl.Trainer(
        max_epochs=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    ).fit(central, datamodule=data)
    assert torch.equal(fed.cache_keys, central.cache_keys)
