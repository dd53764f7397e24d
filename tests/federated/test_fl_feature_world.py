"""A CacheFL world on cached features, saved once and named by a YAML config: every process (the in-process runner,
a Flower ServerApp, each ClientApp actor) rebuilds the same cache model and the same feature splits from it."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("open_clip")

from lightning_addons.experiments import (  # noqa: E402
    CachedFeaturesDataModule,
    feature_world_adapter,
    load_feature_world,
    save_feature_world,
)
from lightning_addons.federated.config import build_simulation, load_config  # noqa: E402
from lightning_addons.integrity import IntegrityError, save_verified  # noqa: E402
from lightning_addons.modules import CacheCLIPAdapter  # noqa: E402


def test_a_feature_world_file_rebuilds_the_cache_model_and_the_splits_bit_for_bit(
    tmp_path, small_feature_world
):
    adapter, feats = small_feature_world()
    path = save_feature_world(tmp_path / "world.pt", adapter, feats)
    rebuilt = feature_world_adapter(str(path))
    assert dict(rebuilt.hparams) == dict(adapter.hparams)
    expected = adapter.state_dict()
    assert sorted(rebuilt.state_dict()) == sorted(expected)
    for key, value in rebuilt.state_dict().items():
        assert torch.equal(value, expected[key]), key
    assert rebuilt.cache_keys.requires_grad  # train_keys: the cache trains (and is the federated state)
    dm = CachedFeaturesDataModule(str(path), batch_size=7)
    for split, (x, y) in feats.items():
        ds = dm.dataset(split)
        assert torch.equal(ds.tensors[0], x) and torch.equal(ds.tensors[1], y)
        assert torch.equal(ds.targets, y)
    assert dm.train_dataloader().batch_size == 7 and dm.train_dataloader().dataset is dm.dataset("train")


def test_a_config_naming_a_feature_world_federates_its_cache_over_partitions_of_its_training_features(
    tmp_path, small_feature_world, feature_world_config
):
    adapter, feats = small_feature_world()
    world = save_feature_world(tmp_path / "world.pt", adapter, feats)
    cfg = load_config(
        feature_world_config(world, num_clients=4, partition="dirichlet", alpha=0.5, min_size=5)
    )
    sim = build_simulation(cfg, progress_bar=False)
    assert sorted(sim.global_state) == ["cache_keys"]
    assert torch.equal(sim.global_state["cache_keys"], adapter.cache_keys.detach())
    parts = sim.federated_datamodule.partitions
    assert sorted(int(i) for p in parts for i in p) == list(range(len(feats["train"][0])))
    assert sim.clients[2].num_samples == len(parts[2])
    # two builds (two processes) agree on the partition and on what a client trains to
    again = build_simulation(cfg, progress_bar=False)
    assert all(
        torch.equal(torch.as_tensor(a), torch.as_tensor(b))
        for a, b in zip(parts, again.federated_datamodule.partitions)
    )
    state, n = sim.train_client(0, 2)
    state2, n2 = again.train_client(0, 2)
    assert n == n2 == len(parts[2])
    assert torch.equal(state["cache_keys"], state2["cache_keys"])
    assert not torch.equal(state["cache_keys"], adapter.cache_keys.detach())


def test_saving_a_feature_world_checks_its_inputs_and_loading_names_a_foreign_file(
    tmp_path, small_feature_world
):
    adapter, feats = small_feature_world()
    with pytest.raises(ValueError, match=r"`adapter` has no cache"):
        save_feature_world(tmp_path / "w.pt", CacheCLIPAdapter(search_alpha_beta=False), feats)
    with pytest.raises(
        ValueError, match=r"`features` must hold the splits \['train', 'val', 'test'\], missing \['test'\]"
    ):
        save_feature_world(tmp_path / "w.pt", adapter, {k: feats[k] for k in ("train", "val")})
    bad = {**feats, "val": (feats["val"][0], feats["val"][1][:3])}
    with pytest.raises(ValueError, match=r"`features\['val'\]` holds 30 features but 3 labels"):
        save_feature_world(tmp_path / "w.pt", adapter, bad)
    foreign = save_verified({"x": torch.ones(2)}, tmp_path / "foreign.pt")
    with pytest.raises(
        ValueError, match=r"is not a CacheFL feature world .* found None: write one with save_feature_world"
    ):
        load_feature_world(foreign)
    world = save_feature_world(tmp_path / "w.pt", adapter, feats)
    with pytest.raises(ValueError, match=r"`split` must be one of \['train', 'val', 'test'\], got 'predict'"):
        CachedFeaturesDataModule(str(world)).dataset("predict")
    world.write_bytes(world.read_bytes()[:100])
    with pytest.raises(IntegrityError):
        feature_world_adapter(str(world))
