"""Flower for real: a loopback SuperLink + 2 SuperNodes run the ClientApp/ServerApp with ``flwr run``.

Follows the measured recipe in ../shared/notes/flower-1.41-loopback.md: insecure mode, no runtime
dependency installation, per-test FLWR_HOME with config.toml, client-side evaluation off, result file
written by the ServerApp, SIGTERM shutdown by PID.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

pytest.importorskip("flwr")

from lightning_addons.federated.config import build_simulation, load_config  # noqa: E402
from lightning_addons.federated.flower import (  # noqa: E402
    make_strategy,
    read_result,
    write_flower_app,
    write_superlink_config,
)

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

CONFIG = {
    "seed": 0,
    "model": {
        "class_path": "ImageClassifier",
        "init_args": {"model": {"class_path": "LeNet5", "init_args": {"width": 0.5}}, "lr": 0.003},
    },
    "data": {"class_path": "DigitsDataModule", "init_args": {"resize": 32}},
    "federation": {"num_clients": 2, "partition": "iid", "rounds": 2, "local_epochs": 2},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(predicate, timeout: float, what: str, procs=()) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        for p, log in procs:
            if p.poll() is not None:
                raise AssertionError(
                    f"{what}: process exited with {p.returncode}:\n{Path(log).read_text()[-3000:]}"
                )
        time.sleep(0.5)
    logs = "\n".join(f"--- {Path(log).name}:\n{Path(log).read_text()[-2000:]}" for _, log in procs)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{logs}")


def test_flower_strategy_names_are_checked():
    with pytest.raises(
        ValueError, match=r"Unknown Flower strategy 'FedFoo'; choose 'LightningFedAvg' or one of .*FedAvgM"
    ):
        make_strategy("FedFoo")
    assert type(make_strategy("FedAvgM", fraction_evaluate=0.0)).__name__ == "FedAvgM"


def _train_reply(node: int, state: dict, num_examples: int = 10):
    from flwr.app import ArrayRecord, Message, Metadata, MetricRecord, RecordDict

    content = RecordDict(
        {"arrays": ArrayRecord(state), "metrics": MetricRecord({"num-examples": num_examples})}
    )
    meta = Metadata(
        run_id=1,
        message_id=f"m{node}",
        src_node_id=node,
        dst_node_id=0,
        reply_to_message_id="i",
        group_id="1",
        created_at=0.0,
        ttl=100.0,
        message_type="train",
    )
    return Message(content=content, metadata=meta)


def test_lightning_fedavg_records_norm_guard_and_validation_rejections_with_node_and_reason():
    from lightning_addons.strategies import Aggregator

    strategy = make_strategy("LightningFedAvg", fraction_evaluate=0.0)
    strategy.global_state = {"w": torch.zeros(3)}
    honest = {node: {"w": torch.full((3,), 1.0 + 0.01 * node)} for node in (1, 2, 3, 4)}
    replies = [_train_reply(node, state) for node, state in honest.items()]
    replies.append(_train_reply(99, {"w": torch.full((3,), 1e6)}))  # finite, 1e6x too large
    replies.append(_train_reply(7, {"w": torch.full((3,), float("nan"))}))
    arrays, _ = strategy.aggregate_train(5, replies)

    by_node = {r["node"]: r for r in strategy.rejected}
    assert sorted(by_node) == [7, 99]
    assert by_node[99]["round"] == 5 and by_node[99]["reason"] == "norm_outlier"
    assert "median norm" in by_node[99]["detail"]
    assert by_node[7]["reason"] == "non_finite" and by_node[7]["key"] == "w"
    # what was aggregated is exactly the honest replies
    expected = Aggregator().aggregate({"w": torch.zeros(3)}, list(honest.values()), [10.0] * 4)
    assert torch.equal(arrays.to_torch_state_dict()["w"], expected["w"])


@pytest.mark.timeout(300)
@pytest.mark.stochastic
def test_loopback_superlink_and_two_supernodes_train_the_federated_state(tmp_path, seed_offset):
    config = {**CONFIG, "seed": seed_offset}
    cfg_path = tmp_path / "fl.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    result_path = tmp_path / "result.json"
    app = write_flower_app(tmp_path / "app", cfg_path, result_path=result_path)
    port = _free_port()
    home = tmp_path / "flwr_home"
    write_superlink_config(home, f"127.0.0.1:{port}", name="loop")
    env = {
        **os.environ,
        "FLWR_HOME": str(home),
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_TELEMETRY_ENABLED": "0",
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",
        # the SuperLink/SuperNodes spawn flower-superexec / flwr-clientapp / flwr-serverapp from PATH
        "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")]),
        # the ServerApp/ClientApp processes must import this checkout, not another install
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }
    procs: list[tuple[subprocess.Popen, Path]] = []

    def start(name: str, args: list[str]) -> subprocess.Popen:
        log = tmp_path / f"{name}.log"
        p = subprocess.Popen(args, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
        procs.append((p, log))
        return p

    try:
        start(
            "superlink",
            [
                str(BIN / "flower-superlink"),
                "--insecure",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--disable-runtime-dependency-installation",
            ],
        )

        def port_open() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        _wait_for(port_open, 60, "the SuperLink port", procs)
        for pid in range(2):
            start(
                f"supernode{pid}",
                [
                    str(BIN / "flower-supernode"),
                    "--insecure",
                    "--superlink",
                    f"127.0.0.1:{port}",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(_free_port()),
                    "--node-config",
                    f"partition-id={pid} num-partitions=2",
                ],
            )
        for pid in range(2):
            log = tmp_path / f"supernode{pid}.log"
            _wait_for(
                lambda log=log: "SuperNode ID" in log.read_text() or "Node ID" in log.read_text(),
                90,
                f"SuperNode {pid} registration",
                procs,
            )
        run = subprocess.run(
            [str(BIN / "flwr"), "run", str(app), "loop"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        _wait_for(result_path.exists, 200, "the ServerApp result file", procs)
    finally:
        for p, _ in reversed(procs):  # SuperNodes first, then the SuperLink
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p, _ in reversed(procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    assert all(p.returncode is not None for p, _ in procs)  # everything stopped

    result = read_result(result_path)
    assert result["rounds"] == 2 and [h["round"] for h in result["history"]] == [0, 1, 2]
    # learning bars that hold over seeds (2 local epochs: 1 epoch left some seeds near chance); the exact
    # check is the equality with the in-process run below
    assert result["history"][-1]["val_acc"] > result["history"][0]["val_acc"] + 0.2
    assert result["test"]["test_acc"] > 0.3
    assert result["rejected"] == []
    # only the federated state moved: payload = trainable floats * 4 bytes; serialised adds headers/keys only
    sim = build_simulation(load_config(config), progress_bar=False)
    n_trainable = sum(p.numel() for p in sim.module.parameters() if p.requires_grad)
    assert result["payload_bytes_per_transfer"] == n_trainable * 4
    assert n_trainable * 4 < result["serialized_bytes_per_transfer"] < n_trainable * 4 + 4096
    # same clients, seeds and rounds in process: the same global state (Flower only moved the bytes)
    flower_state = torch.load(result_path.with_suffix(".pt"), weights_only=True)
    sim_state = sim.fit().global_state
    for key in sim_state:
        torch.testing.assert_close(flower_state[key], sim_state[key], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------- sampling parity (no engine)
@pytest.fixture
def flower_task(monkeypatch):
    """What a Flower run sets before Messages can be created outside one (run, task and node ids)."""
    from flwr.supercore.task_identity import TaskIdentity

    for name, value in (("_run_id", 1), ("_task_id", 1), ("_node_id", 0)):
        monkeypatch.setattr(TaskIdentity, name, value)


class FakeGrid:
    """Connected nodes holding partitions; answers the partition query, records every message sent."""

    def __init__(self, partition_of_node: dict[int, int]) -> None:
        self.partition_of_node = dict(partition_of_node)
        self.sent: list = []

    def get_node_ids(self):
        return list(self.partition_of_node)

    def send_and_receive(self, messages, timeout=None):
        from flwr.app import ConfigRecord, Message, RecordDict

        from lightning_addons.federated.flower import PARTITION_QUERY

        replies = []
        for msg in messages:
            self.sent.append(msg)
            if msg.metadata.message_type == PARTITION_QUERY:
                pid = self.partition_of_node[msg.metadata.dst_node_id]
                replies.append(
                    Message(RecordDict({"client": ConfigRecord({"partition-id": pid})}), reply_to=msg)
                )
        return replies


def test_lightning_fedavg_trains_exactly_the_partitions_its_sampler_draws_each_round(flower_task):
    from flwr.app import ArrayRecord, ConfigRecord

    from lightning_addons.federated.flower import PARTITION_QUERY

    draws = {0: [3, 0], 1: [1]}
    strategy = make_strategy("LightningFedAvg", sampler=draws.__getitem__, fraction_evaluate=0.0)
    grid = FakeGrid({101: 2, 102: 0, 103: 1, 104: 3})
    arrays = ArrayRecord({"w": torch.zeros(3)})
    first = list(strategy.configure_train(1, arrays, ConfigRecord({"local-epochs": 1}), grid))
    queries = [m for m in grid.sent if m.metadata.message_type == PARTITION_QUERY]
    assert sorted(m.metadata.dst_node_id for m in queries) == [101, 102, 103, 104]  # every node asked once
    assert [m.metadata.dst_node_id for m in first] == [102, 104]  # the holders of partitions 0 and 3
    assert [m.content["config"]["partition-id"] for m in first] == [0, 3]
    assert all(m.metadata.message_type == "train" and m.content["config"]["server-round"] == 1 for m in first)
    assert all(m.content["config"]["local-epochs"] == 1 for m in first)
    second = list(strategy.configure_train(2, arrays, ConfigRecord({"local-epochs": 1}), grid))
    assert [m.metadata.dst_node_id for m in second] == [103]
    assert len(grid.sent) == 4  # no second query: the map is kept
    assert strategy.sampled == {1: [0, 3], 2: [1]} and strategy.unreachable == []


def test_lightning_fedavg_skips_a_sampled_partition_no_node_holds_and_refuses_two_holders(flower_task):
    from flwr.app import ArrayRecord, ConfigRecord

    arrays = ArrayRecord({"w": torch.zeros(3)})
    strategy = make_strategy(
        "LightningFedAvg", sampler=lambda rnd: [0, 3], fraction_evaluate=0.0, min_available_nodes=2
    )
    sent = list(strategy.configure_train(1, arrays, ConfigRecord(), FakeGrid({7: 0, 8: 1})))
    assert [m.metadata.dst_node_id for m in sent] == [7]
    assert strategy.unreachable == [{"round": 1, "partitions": [3]}]
    twins = make_strategy(
        "LightningFedAvg", sampler=lambda rnd: [0], fraction_evaluate=0.0, min_available_nodes=2
    )
    with pytest.raises(ValueError, match=r"Nodes 7 and 8 both hold partition-id=0"):
        twins.configure_train(1, arrays, ConfigRecord(), FakeGrid({7: 0, 8: 0}))
    with pytest.raises(
        ValueError, match=r"`sampler` must be a callable \(round index -> partition ids\) or None, got 3"
    ):
        make_strategy("LightningFedAvg", sampler=3)
    with pytest.raises(ValueError, match=r"`query_timeout` must be > 0 seconds, got 0"):
        make_strategy("LightningFedAvg", query_timeout=0)


def _named_reply(node: int, partition: int, state: dict, num_examples: int):
    from flwr.app import ConfigRecord

    msg = _train_reply(node, state, num_examples)
    msg.content["client"] = ConfigRecord({"partition-id": partition})
    return msg


def test_lightning_fedavg_sums_replies_in_partition_order_whatever_order_they_arrive_in():
    from lightning_addons.strategies import Aggregator

    # float sums depend on their order: (1e17 + 1) - 1e17 == 0 but (1e17 - 1e17) + 1 == 1 (even in float64)
    global_state = {"w": torch.zeros(2)}
    holders = {9: 0, 3: 1, 7: 2}  # node ids deliberately in another order than the partitions they hold
    states = {
        0: {"w": torch.tensor([1e17, 0.5])},
        1: {"w": torch.tensor([1.0, 0.25])},
        2: {"w": torch.tensor([-1e17, 2.0])},
    }
    sizes = {0: 10, 1: 10, 2: 10}
    plain = Aggregator(max_norm_ratio=None)  # the norm guard (tested above) off: every reply averaged

    def reference(pids):
        return plain.aggregate(
            global_state, [states[p] for p in pids], [float(sizes[p]) for p in pids], pids
        )["w"]

    expected = reference([0, 1, 2])
    results = []
    for order in ([9, 3, 7], [7, 3, 9], [9, 7, 3], [3, 7, 9]):
        strategy = make_strategy("LightningFedAvg", aggregator=plain, fraction_evaluate=0.0)
        strategy.global_state = global_state
        replies = [_named_reply(n, holders[n], states[holders[n]], sizes[holders[n]]) for n in order]
        arrays, _ = strategy.aggregate_train(1, replies)
        assert strategy.trained == {1: [0, 1, 2]}
        results.append(arrays.to_torch_state_dict()["w"])
    assert all(torch.equal(r, expected) for r in results)
    assert not torch.equal(reference([0, 2, 1]), expected)  # arrival order would have changed the bits


def _train_message(state: dict, server_round: int, partition: int):
    from flwr.app import ArrayRecord, ConfigRecord, Message, Metadata, RecordDict

    content = RecordDict(
        {
            "arrays": ArrayRecord(state),
            "config": ConfigRecord({"server-round": server_round, "partition-id": partition}),
        }
    )
    meta = Metadata(
        run_id=1,
        message_id="t",
        src_node_id=0,
        dst_node_id=42,
        reply_to_message_id="",
        group_id="1",
        created_at=0.0,
        ttl=100.0,
        message_type="train",
    )
    return Message(content=content, metadata=meta)


def test_the_client_app_trains_its_partition_as_the_in_process_runner_does_and_names_it(
    tmp_path, flower_task, small_feature_world, feature_world_config
):
    from types import SimpleNamespace

    from lightning_addons.experiments import save_feature_world
    from lightning_addons.federated import flower

    adapter, feats = small_feature_world()
    world = save_feature_world(tmp_path / "world.pt", adapter, feats)
    cfg_path = feature_world_config(world, num_clients=5, partition="iid")
    sim = build_simulation(load_config(cfg_path), progress_bar=False)
    start = {k: v.clone() for k, v in sim.global_state.items()}
    expected, n = sim.train_client(1, 3)  # round index 1 = server round 2
    context = SimpleNamespace(
        run_config={"config-path": str(cfg_path)}, node_config={"partition-id": 3, "num-partitions": 5}
    )
    reply = flower._client_train(_train_message(start, 2, 3), context)
    got = reply.content["arrays"].to_torch_state_dict()
    assert torch.equal(got["cache_keys"], expected["cache_keys"])
    assert not torch.equal(got["cache_keys"], start["cache_keys"])
    assert reply.content["client"]["partition-id"] == 3 and reply.content["metrics"]["num-examples"] == n
    cached = flower._CLIENT_SIMULATION["sim"]
    again = flower._client_train(_train_message(start, 2, 3), context)  # same process: module and data reused
    assert flower._CLIENT_SIMULATION["sim"] is cached
    assert torch.equal(again.content["arrays"].to_torch_state_dict()["cache_keys"], expected["cache_keys"])
    query = flower._client_query_partition(_train_message(start, 2, 3), context)
    assert dict(query.content["client"]) == {"partition-id": 3, "num-partitions": 5}

    with pytest.raises(
        ValueError, match=r"The server sent partition-id=4 to the node holding partition-id=3"
    ):
        flower._client_train(_train_message(start, 2, 4), context)
    wrong_n = SimpleNamespace(
        run_config=context.run_config, node_config={"partition-id": 3, "num-partitions": 6}
    )
    with pytest.raises(
        ValueError, match=r"num-partitions=6 differs from the config's federation.num_clients=5"
    ):
        flower._client_train(_train_message(start, 2, 3), wrong_n)
    outside = SimpleNamespace(
        run_config=context.run_config, node_config={"partition-id": 5, "num-partitions": 5}
    )
    with pytest.raises(ValueError, match=r"partition-id must be in \[0, num-partitions=5\), got 5"):
        flower._client_query_partition(_train_message(start, 2, 3), outside)
    no_config = SimpleNamespace(run_config=context.run_config, node_config={"num-partitions": 5})
    with pytest.raises(ValueError, match=r"The node config must set 'partition-id'"):
        flower._client_query_partition(_train_message(start, 2, 3), no_config)


def test_with_full_participation_every_node_trains_without_a_query_and_a_partition_twice_is_refused(
    flower_task,
):
    from flwr.app import ArrayRecord, ConfigRecord

    from lightning_addons.federated.flower import PARTITION_QUERY

    strategy = make_strategy("LightningFedAvg", sampler=lambda rnd: [2, 0, 1], fraction_evaluate=0.0)
    grid = FakeGrid({11: 2, 12: 0, 13: 1})
    sent = list(strategy.configure_train(1, ArrayRecord({"w": torch.zeros(3)}), ConfigRecord(), grid))
    assert not any(m.metadata.message_type == PARTITION_QUERY for m in grid.sent)
    assert sorted(m.metadata.dst_node_id for m in sent) == [11, 12, 13]
    assert all(m.content["config"]["server-round"] == 1 for m in sent)
    assert strategy.sampled == {1: [0, 1, 2]}
    strategy.global_state = {"w": torch.zeros(3)}
    twice = [_named_reply(11, 0, {"w": torch.ones(3)}, 5), _named_reply(12, 0, {"w": torch.ones(3)}, 5)]
    with pytest.raises(ValueError, match=r"Round 1: several nodes replied for partition-id \[0\]"):
        strategy.aggregate_train(1, twice)
