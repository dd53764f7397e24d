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
