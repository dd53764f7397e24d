"""Many virtual clients in one process: wall time and peak memory of the in-process runner with 1,000
clients on cached CLIP features, 10% sampled per round, 5 rounds (CacheFL on the tiny world).

    OMP_NUM_THREADS=1 python benchmarks/federated_scale.py            # 1,000 clients x 5 rounds, peer 100 clients
    OMP_NUM_THREADS=1 python benchmarks/federated_scale.py --quick    # smoke run

Data: the tiny world's cached training features (880 images) resampled with small Gaussian jitter
(std ``--jitter`` in feature space, re-normalised) to ``--samples-per-client`` per client on average,
split over the clients by a Dirichlet(``--alpha``) label partition. Every client is a
``ClientDataModule`` over a ``Subset`` of one shared ``TensorDataset`` (no per-client copies), so memory
should not grow with the number of clients. Peer measured in the same run: the same per-round work with
10x fewer clients (``--clients / 10`` clients, all sampled), to separate the per-client-fit cost from
anything that grows with the federation's size. Peak RSS is ``ru_maxrss`` of this process (whole run),
and the increase of the current RSS over each simulation.
"""

from __future__ import annotations

import argparse
import copy
import platform
import resource
import sys
import time
from datetime import datetime, timezone

import torch
import torch.nn.functional as F

sys.path.insert(0, ".")  # run from the repository root without installing

from lightning_addons.experiments import TensorSplitsDataModule, build_world, client_datamodules  # noqa: E402
from lightning_addons.federated import FederatedSimulation  # noqa: E402
from lightning_addons.federated.partition import dirichlet_partition  # noqa: E402


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(adapter, data, x, y, clients: int, fraction: float, rounds: int, alpha: float, seed: int = 0):
    parts = dirichlet_partition(y.numpy(), clients, alpha=alpha, min_size=2, seed=seed)
    cl = client_datamodules(x, y, parts, 32, seed)
    rss0 = _rss_mib()
    t0 = time.perf_counter()
    sim = FederatedSimulation(
        copy.deepcopy(adapter),
        cl,
        rounds=rounds,
        local_epochs=1,
        fraction_fit=fraction,
        eval_datamodule=data,
        evaluate_every=rounds,
        progress_bar=False,
        seed=seed,
    )
    res = sim.fit()
    wall = time.perf_counter() - t0
    fits = sum(len(h["clients"]) for h in res.history)
    return {
        "clients": clients,
        "sampled/round": fits / rounds,
        "wall": wall,
        "train": sum(h["train_seconds"] for h in res.history),
        "per_fit": sum(h["train_seconds"] for h in res.history) / max(1, fits),
        "rss_growth": _rss_mib() - rss0,
        "acc": res.test_metrics.get("test_acc", float("nan")),
        "bytes": res.communication.get("bytes_total", 0),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--samples-per-client", type=int, default=20)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--jitter", type=float, default=0.05)
    args = parser.parse_args(argv)
    if args.quick:
        args.clients, args.rounds = 100, 1
    torch.set_num_threads(1)
    cmd = "OMP_NUM_THREADS=1 python benchmarks/federated_scale.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    print(
        f"# {cmd}\n# {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, 1 thread"
    )
    adapter, feats, _ = build_world(shots=16)
    data = TensorSplitsDataModule(feats)
    x0, y0 = feats["train"]
    n = args.clients * args.samples_per_client
    g = torch.Generator().manual_seed(0)
    pick = torch.randint(len(x0), (n,), generator=g)
    x = F.normalize(x0[pick] + args.jitter * torch.randn(n, x0.shape[1], generator=g), dim=-1)
    y = y0[pick]
    print(
        f"# {n} cached features ({x.shape[1]}-d, {x.numel() * 4 / 2**20:.1f} MiB) from the tiny world's "
        f"{len(x0)} training features; RSS before the runs {_rss_mib():.0f} MiB"
    )
    peer_clients = max(1, args.clients // 10)
    rows = [
        run(adapter, data, x, y, peer_clients, 1.0, args.rounds, args.alpha),
        run(adapter, data, x, y, args.clients, args.fraction, args.rounds, args.alpha),
    ]
    print(f"\n## in-process runner, {args.rounds} rounds, 1 local epoch, CacheFL cache keys")
    print(
        f"{'clients':>8s} {'sampled/round':>14s} {'wall s':>8s} {'train s':>8s} {'s/client fit':>13s} "
        f"{'RSS growth MiB':>15s} {'test acc':>9s} {'bytes moved':>13s}"
    )
    for r in rows:
        print(
            f"{r['clients']:8d} {r['sampled/round']:14.1f} {r['wall']:8.1f} {r['train']:8.1f} {r['per_fit']:13.3f} "
            f"{r['rss_growth']:15.1f} {r['acc']:9.4f} {r['bytes']:13,.0f}"
        )
    big, peer = rows[1], rows[0]
    print(
        f"peak RSS of the whole process (ru_maxrss): {_peak_mib():.0f} MiB; "
        f"s per client fit, {big['clients']} vs {peer['clients']} clients: {big['per_fit'] / peer['per_fit']:.2f}x"
    )


if __name__ == "__main__":
    main()
