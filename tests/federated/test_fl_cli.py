"""``lightning-addons federate``: a YAML config runs a simulation; bad configs fail clearly."""

from __future__ import annotations

import json

import pytest
import yaml

from lightning_addons.cli import extra_commands, main
from lightning_addons.federated.config import load_config, resolve_class

CFG = {
    "seed": 0,
    "model": {
        "class_path": "ImageClassifier",
        "init_args": {"model": {"class_path": "LeNet5", "init_args": {"width": 0.5}}, "lr": 0.003},
    },
    "data": {"class_path": "DigitsDataModule", "init_args": {"resize": 32}},
    "federation": {
        "num_clients": 3,
        "partition": "dirichlet",
        "alpha": 0.5,
        "rounds": 2,
        "local_epochs": 1,
        "aggregator": {"server_optimizer": "fedavgm", "server_momentum": 0.5},
    },
}


def test_federate_is_a_registered_subcommand():
    import lightning_addons.strategies  # noqa: F401

    assert extra_commands()["federate"] == "lightning_addons.cli:federate"


@pytest.mark.stochastic
def test_federate_runs_a_config_and_resumes_from_its_checkpoint(tmp_path, seed_offset):
    # 2 local epochs: with 1, test_acc over seeds 0-7 spread 0.13-0.53 (0.13 at seed 2, chance is 0.1); with 2,
    # 0.41-0.57 over seeds 0-3, so the bar of 0.2 tells a training run from a broken one on every seed
    fed = dict(
        CFG["federation"], local_epochs=2, partition_seed=seed_offset, checkpoint_dir=str(tmp_path / "ckpt")
    )
    cfg = dict(CFG, seed=seed_offset, federation=fed)
    path = tmp_path / "fl.yaml"
    path.write_text(yaml.safe_dump(cfg))
    main(["federate", "--config", str(path), "--out", str(tmp_path / "out.json")])
    out = json.loads((tmp_path / "out.json").read_text())
    assert [h["round"] for h in out["history"]] == [0, 1]
    assert out["test"]["test_acc"] > 0.2
    assert (tmp_path / "ckpt" / "federated_state.pt").exists()
    # a second run finds all rounds done in the checkpoint and only tests
    main(["federate", "--config", str(path), "--out", str(tmp_path / "again.json")])
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["test"] == out["test"] and len(again["history"]) == 2


def test_federate_writes_a_flower_app(tmp_path):
    pytest.importorskip("flwr")
    path = tmp_path / "fl.yaml"
    path.write_text(yaml.safe_dump(CFG))
    main(["federate", "--config", str(path), "--flower-app", str(tmp_path / "app")])
    text = (tmp_path / "app" / "pyproject.toml").read_text()
    assert 'clientapp = "lightning_addons_flower_app:client_app"' in text and "num-server-rounds = 2" in text


def test_bad_federated_configs_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match=r"Unknown `federation` keys \['roundz'\]"):
        load_config(dict(CFG, federation={"roundz": 3}))
    with pytest.raises(ValueError, match="needs a `model` section"):
        load_config({"data": CFG["data"]})
    with pytest.raises(ValueError, match=r"Unknown `class_path` 'NoSuchNet'"):
        resolve_class("NoSuchNet")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
