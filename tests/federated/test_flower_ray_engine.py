"""Flower's simulation engine (Ray) runs the project's ClientApp/ServerApp to the same final state as the in-process
FederatedSimulation of the same config: with full participation (LeNet-5 on digits) and with client sampling
(CacheFL on cached CLIP features: the server trains the partitions the in-process sampler draws). Ray comes with the
``fl-sim`` extra, part of ``all``. Each run also checks that no process of Ray's outlives it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="needs the fl-sim extra (flwr[simulation])")

ROOT = Path(__file__).resolve().parents[2]


def run_benchmark(tmp_path, *args: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "benchmarks/flower_ray.py", *args, "--workdir", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(next(line for line in proc.stdout.splitlines() if line.startswith('{"task"')))


@pytest.mark.slow
def test_flower_ray_engine_reaches_the_in_process_final_state_bit_for_bit(tmp_path):
    out = run_benchmark(tmp_path, "--clients", "2", "--rounds", "2")
    assert (out["task"], out["clients"], out["rounds"]) == ("digits", 2, 2)
    assert out["equal_final_state"] is True and out["max_abs_diff"] == 0.0
    assert out["sampled"] == [[0, 1], [0, 1]] and out["equal_trained"] is True
    assert 0.0 <= out["ray_test"]["test_acc"] <= 1.0
    assert out["ray"]["processes_left"] == []


@pytest.mark.slow
def test_flower_ray_engine_samples_the_in_process_clients_and_reaches_its_cachefl_state_bit_for_bit(tmp_path):
    # 20 virtual SuperNodes on 2 ClientApp actors, 20% sampled per round, CacheFL cache keys on cached features
    out = run_benchmark(
        tmp_path, "--task", "cachefl", "--clients", "20", "--fraction", "0.2", "--rounds", "3"
    )
    assert (out["task"], out["clients"], out["rounds"]) == ("cachefl", 20, 3)
    sampled = out["sampled"]
    assert sampled == out["in_process_sampled"] and out["equal_sampled"] is True
    assert [len(s) for s in sampled] == [4, 4, 4] and len(
        {tuple(s) for s in sampled}
    ) == 3  # a new draw per round
    assert out["equal_trained"] is True  # every sampled client's reply was aggregated, on both engines
    assert out["equal_final_state"] is True and out["max_abs_diff"] == 0.0
    assert out["changed_from_initial"] is True  # the cache trained: equality is not two untouched copies
    assert out["ray_test"] == out["in_process_test"]
    assert out["ray"]["max_processes"] > 3  # Ray's daemons and actors were in the measured tree
    assert out["ray"]["processes_left"] == []
