"""Flower's simulation engine (``flwr[simulation]``, Ray) running the project's ClientApp/ServerApp bodies, against
the in-process :class:`~lightning_addons.federated.FederatedSimulation` of the same config (same final state?).

Needs Ray: the ``fl-sim`` extra (part of ``all``) installs ``flwr[simulation]`` (ray 2.55.1 and jsonschema). Run from the repository root:

    OMP_NUM_THREADS=1 python benchmarks/flower_ray.py --clients 2 --rounds 2 --workdir /tmp/flower_ray

The apps' bodies (``_client_train``, ``run_server``) read the YAML path from ``context.run_config``; under
``run_simulation`` the run config is empty and immutable, so the wrappers here hand them a context holding it.
Full participation (``fraction_fit`` 1): Flower samples nodes with its own generator, so with fewer clients per
round the two runners would train different clients. Wall time includes Ray's start.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import yaml

sys.path.insert(0, ".")  # run from the repository root without installing
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no network: Ray would report usage statistics


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--workdir", default="/tmp/flower_ray")
    p.add_argument("--cpus", type=int, default=2, help="CPUs Ray may use (one per ClientApp actor)")
    p.add_argument("--quick", action="store_true", help="2 clients, 1 round")
    args = p.parse_args(argv)
    if args.quick:
        args.clients, args.rounds = 2, 1
    try:
        import ray  # noqa: F401
    except ModuleNotFoundError:
        sys.exit('Ray is not installed: pip install "lightning-addons[fl-sim]" (flwr[simulation]).')
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    from lightning_addons.federated import flower
    from lightning_addons.federated.config import build_simulation, load_config

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    cfg = {
        "seed": 0,
        "model": {
            "class_path": "ImageClassifier",
            "init_args": {"model": {"class_path": "LeNet5", "init_args": {"width": 0.5}}, "lr": 0.003},
        },
        "data": {"class_path": "DigitsDataModule", "init_args": {"resize": 32}},
        "federation": {
            "num_clients": args.clients,
            "partition": "iid",
            "rounds": args.rounds,
            "local_epochs": 1,
        },
    }
    cfg_path, result_path = work / "fl.yaml", work / "result.json"
    cfg_path.write_text(yaml.safe_dump(cfg))
    run_config = {
        "config-path": str(cfg_path),
        "result-path": str(result_path),
        "num-server-rounds": args.rounds,
    }

    client = ClientApp()

    @client.train()
    def train(msg, context):
        torch.set_num_threads(1)
        ctx = SimpleNamespace(
            run_config={**context.run_config, **run_config}, node_config=context.node_config
        )
        return flower._client_train(msg, ctx)

    server = ServerApp()

    @server.main()
    def serve(grid, context):
        flower.run_server(grid, SimpleNamespace(run_config={**context.run_config, **run_config}))

    print(
        f"# {' '.join(['python', *sys.argv])}\n# torch {torch.__version__}, ray {ray.__version__}", flush=True
    )
    t0, c0 = time.perf_counter(), time.process_time()
    run_simulation(
        server,
        client,
        num_supernodes=args.clients,
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_cpus": args.cpus, "include_dashboard": False},
        },
    )
    ray_wall, ray_driver_cpu = time.perf_counter() - t0, time.process_time() - c0
    final = torch.load(str(result_path.with_suffix(".pt")), weights_only=True)
    test = json.loads(result_path.read_text())["test"]

    t0 = time.perf_counter()
    res = build_simulation(load_config(cfg_path), progress_bar=False, checkpoint_dir=None).fit()
    local_wall = time.perf_counter() - t0
    diff = max(float((final[k] - res.global_state[k]).abs().max()) for k in final)
    equal = all(torch.equal(final[k], res.global_state[k]) for k in final)
    out = {
        "clients": args.clients,
        "rounds": args.rounds,
        "ray_wall_s": ray_wall,
        "ray_driver_cpu_s": ray_driver_cpu,
        "in_process_wall_s": local_wall,
        "equal_final_state": equal,
        "max_abs_diff": diff,
        "ray_test": test,
    }
    print(json.dumps(out), flush=True)
    print(
        f"Flower/Ray: {args.clients} supernodes x {args.rounds} rounds {ray_wall:.1f} s wall; in-process "
        f"{local_wall:.1f} s ({ray_wall / local_wall:.1f}x); final states equal: {equal} (max |diff| {diff:g})"
    )
    return out


if __name__ == "__main__":
    main()
