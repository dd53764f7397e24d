"""Flower's simulation engine (Ray) runs the project's ClientApp/ServerApp bodies to the same final state as the
in-process FederatedSimulation (issue 18). Ray comes with the ``fl-sim`` extra, part of ``all``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="needs the fl-sim extra (flwr[simulation])")

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_flower_ray_engine_reaches_the_in_process_final_state_bit_for_bit(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "benchmarks/flower_ray.py",
        "--clients",
        "2",
        "--rounds",
        "2",
        "--workdir",
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith('{"clients"')))
    assert (out["clients"], out["rounds"]) == (2, 2)
    assert out["equal_final_state"] is True and out["max_abs_diff"] == 0.0
    assert 0.0 <= out["ray_test"]["test_acc"] <= 1.0
