"""Flower deployment (``flwr`` 1.41, Message API; extra ``fl``): a ClientApp wrapping a LightningModule +
its client datamodule, and a ServerApp running a Flower strategy, exchanging ``ArrayRecord``s of the
*federated state only* (``federated_state_dict()`` or the trainable parameters).

The default server strategy, :func:`LightningFedAvg`, is Flower's ``FedAvg`` whose aggregation is our
:class:`~lightning_addons.strategies.Aggregator` (same maths as the simulation and the DDP strategy,
NaN/shape checks included); any Flower strategy can be named instead (``FedAvgM``, ``FedAdam``,
``FedProx``, ``FedMedian``, ``FedTrimmedAvg``, ``Krum``, ...).

Deploy: :func:`write_flower_app` writes an app folder (``pyproject.toml`` + a two-line module) for a
federated YAML config; start a ``flower-superlink`` and one ``flower-supernode`` per client (each with
``--node-config "partition-id=K num-partitions=N"``), then ``flwr run APP_DIR SUPERLINK_NAME``.
See ``docs/federated.md`` (TLS and loopback instructions).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning_addons._imports import require

require("flwr", feature="The Flower adapter (lightning_addons.federated.flower)")

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402
from flwr.serverapp import strategy as flwr_strategies  # noqa: E402

from lightning_addons.data import atomic_write_text  # noqa: E402
from lightning_addons.federated.config import build, build_simulation, load_config  # noqa: E402
from lightning_addons.federated.meter import state_nbytes  # noqa: E402
from lightning_addons.strategies.aggregation import Aggregator, InvalidClientUpdate, validate_update  # noqa: E402
from lightning_addons.strategies.state import get_federated_state, load_federated_state  # noqa: E402

log = logging.getLogger(__name__)

APP_MODULE = "lightning_addons_flower_app"


def LightningFedAvg(aggregator: Aggregator | None = None, **kwargs: Any) -> flwr_strategies.FedAvg:  # noqa: N802
    """Flower's ``FedAvg`` (sampling, messaging, metrics) with our :class:`Aggregator` doing the maths.

    Replies whose arrays hold NaN/inf or have the wrong keys/shapes/dtypes are dropped for the round and
    logged, never averaged in; so are the updates the aggregator's norm guard (or its finiteness check)
    rejects. Every rejection is recorded in ``strategy.rejected`` as ``{"round", "node", "key", "reason",
    "detail"}``: ``reason`` is the :class:`~lightning_addons.strategies.InvalidClientUpdate` reason
    (``"non_finite"``, ``"keys"``, ``"shape"``, ``"dtype"``, ...; ``"invalid_reply"`` for a reply without
    arrays or sample count) or the aggregator's (``"norm_outlier"``, ``"norm_outlier_clipped"``, ...).
    ``kwargs`` go to ``flwr.serverapp.strategy.FedAvg``.

    Examples:
        >>> strategy = LightningFedAvg(fraction_evaluate=0.0)
        >>> type(strategy).__name__
        '_LightningFedAvg'
    """

    class _LightningFedAvg(flwr_strategies.FedAvg):
        def __init__(self) -> None:
            super().__init__(**kwargs)
            self.aggregator = aggregator if aggregator is not None else Aggregator()
            self.global_state: dict | None = None
            self.rejected: list[dict[str, Any]] = []

        def configure_train(self, server_round, arrays, config, grid):
            self.global_state = arrays.to_torch_state_dict()
            return super().configure_train(server_round, arrays, config, grid)

        def aggregate_train(self, server_round, replies):
            valid, _ = self._check_and_log_replies(replies, is_train=True, validate=False)
            states, weights, ids, contents = [], [], [], []
            for msg in valid:
                content = msg.content
                node = msg.metadata.src_node_id
                try:
                    state = content[self.arrayrecord_key].to_torch_state_dict()
                    metrics = content["metrics"]
                    n = float(metrics[self.weighted_by_key])
                    validate_update(self.global_state, state, client=f"node {node}")
                except (InvalidClientUpdate, KeyError, TypeError, ValueError) as err:
                    log.warning(
                        "Round %d: reply of node %s rejected, not aggregated: %s", server_round, node, err
                    )
                    invalid = isinstance(err, InvalidClientUpdate)
                    self.rejected.append(
                        {
                            "round": server_round,
                            "node": int(node),
                            "key": err.key if invalid else None,
                            "reason": err.reason if invalid else "invalid_reply",
                            "detail": str(err),
                        }
                    )
                    continue
                states.append(state)
                weights.append(n)
                ids.append(node)
                contents.append(content)
            if not states:
                return None, None
            new_state = self.aggregator.aggregate(self.global_state, states, weights, ids)
            for r in self.aggregator.last_rejections:
                client = r["client"]
                self.rejected.append(
                    {
                        "round": server_round,
                        "node": int(client) if client is not None else None,
                        "key": r["key"],
                        "reason": r["reason"],
                        "detail": r["detail"],
                    }
                )
            metrics = self.train_metrics_aggr_fn(contents, self.weighted_by_key)
            return ArrayRecord(new_state), metrics

    return _LightningFedAvg()


def make_strategy(name: str = "LightningFedAvg", aggregator: Aggregator | None = None, **kwargs: Any):
    """A server strategy by name: ``LightningFedAvg`` (default) or any class of ``flwr.serverapp.strategy``.

    Raises:
        ValueError: unknown strategy name (lists the available ones).
    """
    if name in ("LightningFedAvg", "fedavg"):
        return LightningFedAvg(aggregator, **kwargs)
    cls = getattr(flwr_strategies, name, None)
    if cls is None or not isinstance(cls, type):
        available = sorted(
            n for n in dir(flwr_strategies) if n[:1].isupper() and n not in ("Result", "Strategy")
        )
        raise ValueError(f"Unknown Flower strategy {name!r}; choose 'LightningFedAvg' or one of {available}.")
    return cls(**kwargs)


# ---------------------------------------------------------------------------- ClientApp
def _client_train(msg: Message, context: Context) -> Message:
    cfg = load_config(str(context.run_config["config-path"]))
    pid = int(context.node_config["partition-id"])
    n_parts = int(context.node_config["num-partitions"])
    fed = cfg["federation"]
    if n_parts != fed["num_clients"]:
        raise ValueError(
            f"node-config num-partitions={n_parts} differs from the config's federation.num_clients="
            f"{fed['num_clients']}."
        )
    sim = build_simulation(cfg, progress_bar=False, checkpoint_dir=None, eval_datamodule=None)
    received = msg.content["arrays"].to_torch_state_dict()
    validate_update(sim.global_state, received, client="server")
    sim.global_state = received
    server_round = int(msg.content["config"].get("server-round", 1))
    t0 = time.perf_counter()
    state, n = sim.train_client(server_round - 1, pid)
    metrics = MetricRecord(
        {
            "num-examples": int(n),
            "train-seconds": time.perf_counter() - t0,
            "payload-bytes": state_nbytes(state),
        }
    )
    return Message(RecordDict({"arrays": ArrayRecord(state), "metrics": metrics}), reply_to=msg)


def make_client_app() -> ClientApp:
    """The ClientApp: on ``train`` it loads the received federated state, fits locally, replies with its state.

    It reads the config path from the run config (``config-path``) and its partition from the node config
    (``partition-id``, ``num-partitions``). Client-side evaluation is not registered (server-side only).
    """
    app = ClientApp()
    app.train()(_client_train)
    return app


# ---------------------------------------------------------------------------- ServerApp
def _atomic_write_json(obj: Any, path: str | Path) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2))


def run_server(grid: Grid, context: Context) -> dict[str, Any]:
    """ServerApp body: build the module, run the strategy, evaluate on the server, write ``result-path``."""
    rc = context.run_config
    cfg = load_config(str(rc["config-path"]))
    fed = cfg["federation"]
    flower_cfg = dict(cfg.get("flower") or {})
    sim = build_simulation(cfg, progress_bar=False, checkpoint_dir=None)
    module = sim.module
    num_rounds = int(rc.get("num-server-rounds", fed["rounds"]))
    strategy_kwargs = {
        "fraction_train": float(fed["fraction_fit"]),
        "fraction_evaluate": 0.0,
        "min_train_nodes": int(fed["min_fit_clients"]),
        "min_available_nodes": int(flower_cfg.get("min_available_nodes", fed["num_clients"])),
        **dict(flower_cfg.get("strategy_kwargs") or {}),
    }
    name = flower_cfg.get("strategy", "LightningFedAvg")
    strategy = make_strategy(
        name, sim.aggregator if name in ("LightningFedAvg", "fedavg") else None, **strategy_kwargs
    )
    initial = get_federated_state(module)
    history: list[dict[str, Any]] = []

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        state = arrays.to_torch_state_dict()
        metrics = sim.evaluate(state, stage="val")
        history.append({"round": server_round, **metrics, "serialized-bytes": int(arrays.count_bytes())})
        return MetricRecord({k: float(v) for k, v in metrics.items()})

    t0 = time.perf_counter()
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(initial),
        num_rounds=num_rounds,
        timeout=float(flower_cfg.get("round_timeout", 3600)),
        train_config=ConfigRecord({"local-epochs": int(fed["local_epochs"])}),
        evaluate_fn=evaluate_fn,
    )
    final = result.arrays.to_torch_state_dict()
    load_federated_state(module, final)
    test = sim.evaluate(final, stage="test")
    payload = state_nbytes(initial)
    out = {
        "rounds": num_rounds,
        "seconds": time.perf_counter() - t0,
        "history": history,
        "test": test,
        "payload_bytes_per_transfer": payload,
        "serialized_bytes_per_transfer": int(ArrayRecord(initial).count_bytes()),
        "full_model_bytes": state_nbytes(module.state_dict()),
        "rejected": list(getattr(strategy, "rejected", [])),
        "final_state_sums": {k: float(v.double().sum()) for k, v in final.items()},
    }
    result_path = str(rc.get("result-path", ""))
    if result_path:
        import torch

        _atomic_write_json(out, result_path)
        torch.save(final, str(Path(result_path).with_suffix(".pt")))
    return out


def make_server_app() -> ServerApp:
    """The ServerApp (see :func:`run_server`)."""
    app = ServerApp()
    app.main()(lambda grid, context: run_server(grid, context) and None)
    return app


# ---------------------------------------------------------------------------- app folder
def write_flower_app(
    directory: str | Path,
    config_path: str | Path,
    result_path: str | Path | None = None,
    num_server_rounds: int | None = None,
    name: str = "lightning-addons-fl",
) -> Path:
    """Write a Flower app folder that runs a federated YAML config with ``flwr run``.

    The folder holds ``pyproject.toml`` (components and run config) and a module creating the apps; the
    SuperLink/SuperNodes' Python must have ``lightning-addons[fl]`` installed (the app imports it).

    Raises:
        FileNotFoundError: ``config_path`` does not exist.
        ValueError: an invalid config.

    Examples:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> cfg = Path(d) / "c.yaml"
        >>> _ = cfg.write_text("model: {class_path: ImageClassifier, init_args: {model: {class_path: LeNet5}}}\\n"
        ...                    "data: {class_path: DigitsDataModule}\\n")
        >>> sorted(p.name for p in write_flower_app(Path(d) / "app", cfg).iterdir())
        ['lightning_addons_flower_app.py', 'pyproject.toml']
    """
    config_path = Path(config_path).resolve()
    cfg = load_config(config_path)
    rounds = int(num_server_rounds if num_server_rounds is not None else cfg["federation"]["rounds"])
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    result = "" if result_path is None else str(Path(result_path).resolve())
    (directory / "pyproject.toml").write_text(
        f"""[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "{name}"
version = "1.0.0"
dependencies = ["lightning-addons[fl]"]

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "lightning-addons"

[tool.flwr.app.components]
serverapp = "{APP_MODULE}:server_app"
clientapp = "{APP_MODULE}:client_app"

[tool.flwr.app.config]
config-path = {json.dumps(str(config_path))}
result-path = {json.dumps(result)}
num-server-rounds = {rounds}
"""
    )
    (directory / f"{APP_MODULE}.py").write_text(
        '"""Flower app of lightning-addons (generated by write_flower_app)."""\n\n'
        "from lightning_addons.federated.flower import make_client_app, make_server_app\n\n"
        "client_app = make_client_app()\n"
        "server_app = make_server_app()\n"
    )
    return directory


def write_superlink_config(
    flwr_home: str | Path,
    address: str,
    name: str = "local",
    insecure: bool = True,
    root_certificates: str | None = None,
) -> Path:
    """Write ``$FLWR_HOME/config.toml`` naming a SuperLink connection (``flwr run APP NAME`` uses it).

    Use ``insecure=False`` and ``root_certificates`` (a CA certificate path) for TLS.
    """
    home = Path(flwr_home)
    home.mkdir(parents=True, exist_ok=True)
    lines = [f'[superlink]\ndefault = "{name}"\n', f"[superlink.{name}]", f'address = "{address}"']
    if insecure:
        lines.append("insecure = true")
    elif root_certificates:
        lines.append(f"root-certificates = {json.dumps(str(root_certificates))}")
    path = home / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def read_result(path: str | Path) -> Mapping[str, Any]:
    """The JSON the ServerApp wrote."""
    return json.loads(Path(path).read_text())


__all__ = [
    "LightningFedAvg",
    "build",
    "make_client_app",
    "make_server_app",
    "make_strategy",
    "read_result",
    "run_server",
    "write_flower_app",
    "write_superlink_config",
]
