"""Flower deployment (``flwr`` 1.41, Message API; extra ``fl``): a ClientApp wrapping a LightningModule +
its client datamodule, and a ServerApp running a Flower strategy, exchanging ``ArrayRecord``s of the
*federated state only* (``federated_state_dict()`` or the trainable parameters).

The default server strategy, :func:`LightningFedAvg`, is Flower's ``FedAvg`` whose aggregation is our
:class:`~lightning_addons.strategies.Aggregator` (same maths as the simulation and the DDP strategy,
NaN/shape checks included) and whose client sampling is the in-process runner's
(:meth:`~lightning_addons.federated.FederatedSimulation.sample_clients`, seeded by (seed, round)): the
server asks every node once for its ``partition-id`` (a ``query.partition`` message; not needed with full
participation), then sends each round's train messages only to the nodes holding the sampled partitions
and averages their replies in partition order, so a Flower run reaches the in-process run's global state. Any Flower strategy can be
named instead (``FedAvgM``, ``FedAdam``, ``FedProx``, ``FedMedian``, ``FedTrimmedAvg``, ``Krum``, ...;
they sample nodes with Flower's own generator).

Deploy: :func:`write_flower_app` writes an app folder (``pyproject.toml`` + a two-line module) for a
federated YAML config; start a ``flower-superlink`` and one ``flower-supernode`` per client (each with
``--node-config "partition-id=K num-partitions=N"``), then ``flwr run APP_DIR SUPERLINK_NAME``.
Flower's simulation engine (``flwr.simulation.run_simulation``, extra ``fl-sim``) gives apps an empty
run config: pass it to :func:`make_client_app` / :func:`make_server_app` instead.
See ``docs/federated.md`` (TLS and loopback instructions).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from lightning_addons._imports import require

require("flwr", feature="The Flower adapter (lightning_addons.federated.flower)")

from flwr.app import (  # noqa: E402
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
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
#: Message type of the server's question "which partition do you hold?" (answered by :func:`make_client_app`).
PARTITION_QUERY = f"{MessageType.QUERY}.partition"


def LightningFedAvg(  # noqa: N802
    aggregator: Aggregator | None = None,
    sampler: Callable[[int], Sequence[int]] | None = None,
    query_timeout: float = 600.0,
    **kwargs: Any,
) -> flwr_strategies.FedAvg:
    """Flower's ``FedAvg`` (messaging, metrics) with our :class:`Aggregator` doing the maths.

    With a ``sampler`` (``round index -> partition ids``, e.g. ``FederatedSimulation.sample_clients``) the
    clients of each round are the sampler's, not Flower's: before a round the strategy asks every node it
    does not know yet for its partition (a :data:`PARTITION_QUERY` message; the nodes' ``partition-id``
    node config), then sends train messages to the nodes holding the sampled partitions only (each with
    its ``partition-id`` in the config, checked by the client). When the sampler draws every partition
    and as many nodes are connected (full participation), no node is asked: all of them train. A sampled
    partition that no connected node holds is skipped for the round (logged; listed in
    ``strategy.unreachable``); two connected nodes claiming one partition are an error. ``strategy.sampled`` maps each server round (from 1) to its
    sampled partition ids, ``strategy.trained`` to the ids whose valid replies went to the aggregator.
    Without a sampler, Flower samples ``fraction_train`` of the nodes itself.

    Replies are aggregated in a fixed order, by partition id (by node id when a reply does not name its
    partition), so the average is the same float sum as the in-process runner's. Replies whose arrays hold
    NaN/inf or have the wrong keys/shapes/dtypes are dropped for the round and logged, never averaged in;
    so are the updates the aggregator's norm guard (or its finiteness check) rejects. Every rejection is
    recorded in ``strategy.rejected`` as ``{"round", "node", "partition", "key", "reason", "detail"}``:
    ``reason`` is the :class:`~lightning_addons.strategies.InvalidClientUpdate` reason (``"non_finite"``,
    ``"keys"``, ``"shape"``, ``"dtype"``, ...; ``"invalid_reply"`` for a reply without arrays or sample
    count) or the aggregator's (``"norm_outlier"``, ``"norm_outlier_clipped"``, ...). ``kwargs`` go to
    ``flwr.serverapp.strategy.FedAvg``.

    Raises:
        ValueError: ``sampler`` not callable or ``query_timeout`` not > 0; during a run, two connected
            nodes claiming the same partition (or replying for it).
        TimeoutError: during a run with a ``sampler``, fewer than ``min_available_nodes`` nodes connected
            within ``query_timeout`` seconds.

    Examples:
        >>> strategy = LightningFedAvg(fraction_evaluate=0.0)
        >>> type(strategy).__name__
        '_LightningFedAvg'
        >>> strategy = LightningFedAvg(sampler=lambda rnd: [rnd % 4], fraction_evaluate=0.0)
        >>> strategy.sampler(5)
        [1]
    """
    if sampler is not None and not callable(sampler):
        raise ValueError(
            f"`sampler` must be a callable (round index -> partition ids) or None, got {sampler!r}."
        )
    if not (isinstance(query_timeout, (int, float)) and query_timeout > 0):
        raise ValueError(f"`query_timeout` must be > 0 seconds, got {query_timeout!r}.")

    class _LightningFedAvg(flwr_strategies.FedAvg):
        def __init__(self) -> None:
            super().__init__(**kwargs)
            self.aggregator = aggregator if aggregator is not None else Aggregator()
            self.sampler = sampler
            self.query_timeout = float(query_timeout)
            self.global_state: dict | None = None
            self.rejected: list[dict[str, Any]] = []
            self.sampled: dict[int, list[int]] = {}
            self.trained: dict[int, list[int]] = {}
            self.unreachable: list[dict[str, Any]] = []
            self.partition_of: dict[int, int] = {}  # node id -> partition id
            self.node_of: dict[int, int] = {}  # partition id -> node id

        def wait_for_nodes(self, grid: Grid) -> list[int]:
            """The connected node ids, once there are ``min_available_nodes`` (``query_timeout`` at most)."""
            deadline = time.monotonic() + self.query_timeout
            while len(nodes := list(grid.get_node_ids())) < self.min_available_nodes:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"Only {len(nodes)} of min_available_nodes={self.min_available_nodes} nodes connected "
                        f"within query_timeout={self.query_timeout} s."
                    )
                log.info("Waiting for nodes: %d of %d connected.", len(nodes), self.min_available_nodes)
                time.sleep(1.0)
            return nodes

        def discover_partitions(self, grid: Grid) -> dict[int, int]:
            """Ask the connected nodes not seen yet for their partition; returns ``{partition id: node id}``."""
            nodes = self.wait_for_nodes(grid)
            unknown = [n for n in nodes if n not in self.partition_of]
            if unknown:
                asks = [
                    Message(
                        content=RecordDict({"config": ConfigRecord({})}),
                        message_type=PARTITION_QUERY,
                        dst_node_id=node,
                    )
                    for node in unknown
                ]
                replies = grid.send_and_receive(asks, timeout=self.query_timeout)
                connected = set(nodes)
                for reply in replies:
                    node = int(reply.metadata.src_node_id)
                    if reply.has_error():
                        log.warning("Node %s did not name its partition: %s", node, reply.error.reason)
                        continue
                    pid = int(reply.content["client"]["partition-id"])
                    other = self.node_of.get(pid)
                    if other is not None and other != node and other in connected:
                        raise ValueError(
                            f"Nodes {other} and {node} both hold partition-id={pid}: give every SuperNode its own "
                            "`--node-config partition-id=K`."
                        )
                    self.partition_of[node], self.node_of[pid] = pid, node
            return dict(self.node_of)

        def configure_train(self, server_round, arrays, config, grid):
            self.global_state = arrays.to_torch_state_dict()
            if self.sampler is None:
                return super().configure_train(server_round, arrays, config, grid)
            partitions = sorted(int(p) for p in self.sampler(server_round - 1))
            self.sampled[server_round] = partitions
            nodes = self.wait_for_nodes(grid)
            if partitions == list(range(len(nodes))) and not self.node_of:
                # every connected node trains (full participation): no need to ask who holds what; the
                # replies name their partitions (aggregate_train sorts by them and refuses duplicates)
                log.info("configure_train: all %d nodes (full participation)", len(nodes))
                return super()._construct_messages(
                    RecordDict(
                        {
                            self.arrayrecord_key: arrays,
                            self.configrecord_key: _with_round(config, server_round),
                        }
                    ),
                    nodes,
                    MessageType.TRAIN,
                )
            node_of = self.discover_partitions(grid)
            connected = set(grid.get_node_ids())
            missing = [p for p in partitions if node_of.get(p) not in connected]
            if missing:
                log.warning(
                    "Round %d: sampled partitions %s are held by no connected node; skipped.",
                    server_round,
                    missing,
                )
                self.unreachable.append({"round": server_round, "partitions": missing})
            messages = []
            for pid in partitions:
                if pid in missing:
                    continue
                cfg = _with_round(config, server_round, **{"partition-id": pid})
                record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: cfg})
                messages.append(
                    Message(content=record, message_type=MessageType.TRAIN, dst_node_id=node_of[pid])
                )
            log.info("configure_train: sampled partitions %s (of %d nodes)", partitions, len(connected))
            return messages

        def aggregate_train(self, server_round, replies):
            valid, _ = self._check_and_log_replies(replies, is_train=True, validate=False)
            # the sum's order is fixed: by partition id when every reply names it, else by node id
            pids = [_reply_partition(msg) for msg in valid]
            by_partition = bool(valid) and all(p is not None for p in pids)
            if by_partition and len(set(pids)) < len(pids):
                twice = sorted({p for p in pids if pids.count(p) > 1})
                raise ValueError(
                    f"Round {server_round}: several nodes replied for partition-id {twice}: give every SuperNode "
                    "its own `--node-config partition-id=K`."
                )
            keyed = sorted(
                zip(
                    (p if by_partition else int(m.metadata.src_node_id) for p, m in zip(pids, valid)),
                    pids,
                    valid,
                ),
                key=lambda t: t[0],
            )
            states, weights, ids, contents, node_of_id = [], [], [], [], {}
            for key, pid, msg in keyed:
                content = msg.content
                node = int(msg.metadata.src_node_id)
                try:
                    state = content[self.arrayrecord_key].to_torch_state_dict()
                    metrics = content["metrics"]
                    n = float(metrics[self.weighted_by_key])
                    name = f"node {node}" + (f" (partition {pid})" if pid is not None else "")
                    validate_update(self.global_state, state, client=name)
                except (InvalidClientUpdate, KeyError, TypeError, ValueError) as err:
                    log.warning(
                        "Round %d: reply of node %s rejected, not aggregated: %s", server_round, node, err
                    )
                    invalid = isinstance(err, InvalidClientUpdate)
                    self.rejected.append(
                        {
                            "round": server_round,
                            "node": node,
                            "partition": pid,
                            "key": err.key if invalid else None,
                            "reason": err.reason if invalid else "invalid_reply",
                            "detail": str(err),
                        }
                    )
                    continue
                states.append(state)
                weights.append(n)
                ids.append(key)
                node_of_id[key] = (node, pid)
                contents.append(content)
            self.trained[server_round] = list(ids)
            if not states:
                return None, None
            new_state = self.aggregator.aggregate(self.global_state, states, weights, ids)
            for r in self.aggregator.last_rejections:
                node, pid = node_of_id.get(r["client"], (None, None))
                self.rejected.append(
                    {
                        "round": server_round,
                        "node": node,
                        "partition": pid,
                        "key": r["key"],
                        "reason": r["reason"],
                        "detail": r["detail"],
                    }
                )
            metrics = self.train_metrics_aggr_fn(contents, self.weighted_by_key)
            return ArrayRecord(new_state), metrics

    return _LightningFedAvg()


def _with_round(config: ConfigRecord, server_round: int, **extra: Any) -> ConfigRecord:
    return ConfigRecord({**dict(config), "server-round": server_round, **extra})


def _reply_partition(msg: Message) -> int | None:
    """The ``partition-id`` a train reply names (our ClientApp's ``client`` record), or None."""
    try:
        return int(msg.content["client"]["partition-id"])
    except (KeyError, TypeError, ValueError):
        return None


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
#: The client simulation of this process (one per config content): a process running many virtual clients
#: (a Ray actor of Flower's simulation engine) builds the module and data once, as the in-process runner does.
_CLIENT_SIMULATION: dict[str, Any] = {}


def _node_partition(context: Context) -> tuple[int, int]:
    """``(partition-id, num-partitions)`` of this node's config, checked."""
    node_config = context.node_config
    try:
        pid, n_parts = int(node_config["partition-id"]), int(node_config["num-partitions"])
    except KeyError as err:
        raise ValueError(
            f"The node config must set {err.args[0]!r} (flower-supernode --node-config "
            f'"partition-id=K num-partitions=N"), got {dict(node_config)!r}.'
        ) from None
    if not 0 <= pid < n_parts:
        raise ValueError(f"node-config partition-id must be in [0, num-partitions={n_parts}), got {pid}.")
    return pid, n_parts


def _client_simulation(context: Context):
    """The (cached) FederatedSimulation of the run config's YAML and this node's partition id."""
    pid, n_parts = _node_partition(context)
    path = Path(str(context.run_config["config-path"]))
    key = f"{path.resolve()}:{hashlib.sha256(path.read_bytes()).hexdigest()}"
    if _CLIENT_SIMULATION.get("key") != key:
        _CLIENT_SIMULATION.clear()
        cfg = load_config(path)
        sim = build_simulation(cfg, progress_bar=False, checkpoint_dir=None, eval_datamodule=None)
        _CLIENT_SIMULATION.update(key=key, sim=sim)
    sim = _CLIENT_SIMULATION["sim"]
    if n_parts != sim.num_clients:
        raise ValueError(
            f"node-config num-partitions={n_parts} differs from the config's federation.num_clients="
            f"{sim.num_clients}."
        )
    return sim, pid


def _client_train(msg: Message, context: Context) -> Message:
    sim, pid = _client_simulation(context)
    config = msg.content["config"]
    if "partition-id" in config and int(config["partition-id"]) != pid:
        raise ValueError(
            f"The server sent partition-id={config['partition-id']} to the node holding partition-id={pid}."
        )
    received = msg.content["arrays"].to_torch_state_dict()
    validate_update(sim.global_state, received, client="server")
    sim.global_state = received
    server_round = int(config.get("server-round", 1))
    t0 = time.perf_counter()
    state, n = sim.train_client(server_round - 1, pid)
    metrics = MetricRecord(
        {
            "num-examples": int(n),
            "train-seconds": time.perf_counter() - t0,
            "payload-bytes": state_nbytes(state),
        }
    )
    content = RecordDict(
        {"arrays": ArrayRecord(state), "metrics": metrics, "client": ConfigRecord({"partition-id": pid})}
    )
    return Message(content, reply_to=msg)


def _client_query_partition(msg: Message, context: Context) -> Message:
    pid, n_parts = _node_partition(context)
    content = RecordDict({"client": ConfigRecord({"partition-id": pid, "num-partitions": n_parts})})
    return Message(content, reply_to=msg)


def _with_run_config(context: Context, run_config: Mapping[str, Any]) -> Any:
    if not run_config:
        return context
    return SimpleNamespace(
        run_config={**context.run_config, **run_config},
        node_config=context.node_config,
        state=getattr(context, "state", None),
    )


def make_client_app(run_config: Mapping[str, Any] | None = None) -> ClientApp:
    """The ClientApp: on ``train`` it loads the received federated state, fits locally, replies with its state.

    It reads the config path from the run config (``config-path``) and its partition from the node config
    (``partition-id``, ``num-partitions``); the module and data are built once per process and config. It
    answers the server's :data:`PARTITION_QUERY` with its partition, and each train reply names it (a
    ``client`` ConfigRecord). Client-side evaluation is not registered (server-side only).

    Args:
        run_config: entries added to the run config Flower gives the app (Flower's simulation engine
            gives an empty one: pass ``{"config-path": ...}`` here).

    Examples:
        >>> type(make_client_app({"config-path": "fl.yaml"})).__name__
        'ClientApp'
    """
    extra = dict(run_config or {})
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        return _client_train(msg, _with_run_config(context, extra))

    @app.query(PARTITION_QUERY.split(".", 1)[1])
    def query_partition(msg: Message, context: Context) -> Message:
        return _client_query_partition(msg, _with_run_config(context, extra))

    return app


# ---------------------------------------------------------------------------- ServerApp
def _atomic_write_json(obj: Any, path: str | Path) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2))


def run_server(grid: Grid, context: Context) -> dict[str, Any]:
    """ServerApp body: build the module, run the strategy, evaluate on the server, write ``result-path``.

    With the default strategy the clients of each round are
    :meth:`~lightning_addons.federated.FederatedSimulation.sample_clients`'s (see :func:`LightningFedAvg`);
    the result holds them per round (``sampled``).
    """
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
    if name in ("LightningFedAvg", "fedavg"):
        strategy = LightningFedAvg(sim.aggregator, sampler=sim.sample_clients, **strategy_kwargs)
    else:
        strategy = make_strategy(name, **strategy_kwargs)
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
        "sampled": [list(v) for _, v in sorted(getattr(strategy, "sampled", {}).items())],
        "trained": [list(v) for _, v in sorted(getattr(strategy, "trained", {}).items())],
        "unreachable": list(getattr(strategy, "unreachable", [])),
        "final_state_sums": {k: float(v.double().sum()) for k, v in final.items()},
    }
    result_path = str(rc.get("result-path", ""))
    if result_path:
        import torch

        _atomic_write_json(out, result_path)
        torch.save(final, str(Path(result_path).with_suffix(".pt")))
    return out


def make_server_app(run_config: Mapping[str, Any] | None = None) -> ServerApp:
    """The ServerApp (see :func:`run_server`); ``run_config`` as for :func:`make_client_app`.

    Examples:
        >>> type(make_server_app({"config-path": "fl.yaml", "result-path": "out.json"})).__name__
        'ServerApp'
    """
    extra = dict(run_config or {})
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        run_server(grid, _with_run_config(context, extra))

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
    "PARTITION_QUERY",
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
