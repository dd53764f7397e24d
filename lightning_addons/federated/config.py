"""YAML configs of federated runs, shared by ``lightning-addons federate`` and the Flower apps.

A config names the model and data the LightningCLI way (``class_path`` + ``init_args``; short names
resolve for every class exported by our subpackages) and adds a ``federation`` section::

    seed: 0
    model: {class_path: ImageClassifier, init_args: {model: {class_path: LeNet5}, lr: 0.003}}
    data: {class_path: DigitsDataModule, init_args: {resize: 32}}
    federation: {num_clients: 4, partition: dirichlet, alpha: 0.5, rounds: 5, local_epochs: 1}
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from lightning_addons.federated.partition import check_partition
from lightning_addons.resolve import SHORT_NAME_MODULES, instantiate, load_yaml, resolve_class  # noqa: F401

FEDERATION_KEYS = {
    "num_clients": 10,
    "partition": "iid",
    "alpha": 0.5,
    "min_size": 10,
    "classes_per_client": 2,
    "shards_per_client": 2,
    "partition_seed": 0,
    "local_val_fraction": 0.0,
    "batch_size": None,
    "rounds": 10,
    "local_epochs": 1,
    "local_steps": None,
    "fraction_fit": 1.0,
    "min_fit_clients": 1,
    "aggregator": {},
    "evaluate_every": 1,
    "federated_evaluation": False,
    "monitor": "val_acc",
    "mode": "max",
    "client_timeout": None,
    "on_invalid_update": "drop",
    "checkpoint_dir": None,
    "trainer": {},
    "fedprox_mu": 0.0,
    "logger": None,
}


def load_config(path: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """Read and check a federated config (a YAML path or a dict); fills the ``federation`` defaults.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: missing ``model``/``data``, unknown ``federation`` keys.
    """
    if isinstance(path, Mapping):
        cfg = dict(path)
    else:
        cfg = load_yaml(path)
    for key in ("model", "data"):
        if key not in cfg:
            raise ValueError(f"The config needs a `{key}` section (class_path + init_args).")
    fed = dict(cfg.get("federation") or {})
    unknown = sorted(set(fed) - set(FEDERATION_KEYS))
    if unknown:
        hints = {k: difflib.get_close_matches(k, list(FEDERATION_KEYS), n=1) for k in unknown}
        hint = "".join(f" ({k!r}: did you mean {v[0]!r}?)" for k, v in hints.items() if v)
        raise ValueError(f"Unknown `federation` keys {unknown}{hint}; allowed: {sorted(FEDERATION_KEYS)}.")
    if "partition" in fed:  # checked here, before any model or data is built
        fed["partition"] = check_partition(fed["partition"], "federation.partition")
    cfg["federation"] = {**FEDERATION_KEYS, **fed}
    aggregator = cfg["federation"]["aggregator"] or {}
    if not isinstance(aggregator, Mapping):
        raise ValueError(
            f"`federation.aggregator` must be a mapping of Aggregator arguments, got {aggregator!r}."
        )
    import inspect

    from lightning_addons.strategies.aggregation import Aggregator

    allowed = sorted(set(inspect.signature(Aggregator).parameters) - {"seed"})
    unknown = sorted(set(aggregator) - set(allowed))
    if unknown:
        raise ValueError(f"Unknown `federation.aggregator` keys {unknown}; allowed: {allowed}.")
    cfg.setdefault("seed", 0)
    return cfg


def build(cfg: Mapping[str, Any]) -> tuple[pl.LightningModule, Any]:
    """The module (seeded with ``cfg["seed"]``, so every process builds the same initial state) and a
    :class:`~lightning_addons.federated.FederatedDataModule` over the configured data."""
    from lightning_addons.federated.data import FederatedDataModule

    fed = cfg["federation"]
    torch.manual_seed(int(cfg.get("seed", 0)))
    module = instantiate(cfg["model"])
    if not isinstance(module, pl.LightningModule):
        raise ValueError(f"`model` must build a LightningModule, got {type(module).__name__}.")
    data = instantiate(cfg["data"])
    fdm = FederatedDataModule(
        data,
        num_clients=fed["num_clients"],
        partition=fed["partition"],
        alpha=fed["alpha"],
        min_size=fed["min_size"],
        classes_per_client=fed["classes_per_client"],
        shards_per_client=fed["shards_per_client"],
        partition_seed=fed["partition_seed"],
        batch_size=fed["batch_size"],
        local_val_fraction=fed["local_val_fraction"],
        seed=int(cfg.get("seed", 0)),
    )
    return module, fdm


def _fingerprinted(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a config that determines a run's result (all but ``rounds``, ``checkpoint_dir`` and
    ``logger``)."""
    out = {k: v for k, v in cfg.items() if k != "federation"}
    out["federation"] = {
        k: v
        for k, v in dict(cfg.get("federation") or {}).items()
        if k not in ("rounds", "checkpoint_dir", "logger")
    }
    return out


def build_simulation(cfg: Mapping[str, Any], **overrides: Any):
    """A ready :class:`~lightning_addons.federated.FederatedSimulation` from a loaded config."""
    from lightning_addons.federated.simulation import FederatedSimulation
    from lightning_addons.strategies.aggregation import Aggregator
    from lightning_addons.strategies.fedprox import FedProx

    module, fdm = build(cfg)
    fed = cfg["federation"]
    callbacks = [FedProx(fed["fedprox_mu"])] if fed["fedprox_mu"] else []
    kwargs = dict(
        rounds=fed["rounds"],
        local_epochs=fed["local_epochs"],
        local_steps=fed["local_steps"],
        fraction_fit=fed["fraction_fit"],
        min_fit_clients=fed["min_fit_clients"],
        aggregator=Aggregator(**dict(fed["aggregator"] or {}), seed=int(cfg.get("seed", 0))),
        evaluate_every=fed["evaluate_every"],
        federated_evaluation=fed["federated_evaluation"],
        monitor=fed["monitor"],
        mode=fed["mode"],
        client_timeout=fed["client_timeout"],
        on_invalid_update=fed["on_invalid_update"],
        checkpoint_dir=fed["checkpoint_dir"],
        trainer_kwargs=fed["trainer"],
        client_callbacks=callbacks,
        seed=int(cfg.get("seed", 0)),
        run_config=_fingerprinted(cfg),
        logger=instantiate(fed["logger"]) if fed["logger"] is not None else None,
    )
    kwargs.update(overrides)
    return FederatedSimulation(module, fdm, **kwargs)
