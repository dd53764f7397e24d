"""Federated benchmark: seconds per round (cached features vs through the encoder) and bytes per round
(CacheFL cache vs full-model FedAvg), measured on the tiny world and, analytically, for real CLIPs.

    OMP_NUM_THREADS=1 python benchmarks/federated.py            # full (about 3-5 min on 2 CPU cores)
    OMP_NUM_THREADS=1 python benchmarks/federated.py --quick    # smoke run

Peers measured in the same run: the same simulation with clients holding images (the frozen encoder
runs every batch) instead of precomputed features; full-model FedAvg bytes (the whole CLIP, and its
image tower) instead of the cache keys.
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
import time
from datetime import datetime, timezone

import torch

sys.path.insert(0, ".")  # run from the repository root without installing

from lightning_addons.federated import FederatedSimulation  # noqa: E402
from lightning_addons.federated.cachefl import TensorSplitsDataModule, _clients, build_world  # noqa: E402
from lightning_addons.federated.partition import dirichlet_partition  # noqa: E402
from lightning_addons.strategies import get_federated_state  # noqa: E402


def _nbytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def seconds_per_round(adapter, data, rounds: int, clients: int, seed: int = 0) -> tuple[float, float]:
    x, y = data["train"]
    parts = dirichlet_partition(y.numpy(), clients, alpha=0.5, min_size=10, seed=seed)
    sim = FederatedSimulation(
        copy.deepcopy(adapter),
        _clients(x, y, parts, 32, seed),
        rounds=rounds,
        local_epochs=1,
        eval_datamodule=TensorSplitsDataModule(data),
        progress_bar=False,
        seed=seed,
    )
    t0 = time.perf_counter()
    res = sim.fit()
    total = time.perf_counter() - t0
    train = sum(h["train_seconds"] for h in res.history) / rounds
    return total / rounds, train


def analytic_rows(shots: int = 16) -> list[tuple[str, int, int, int, int, int]]:
    """(model, classes, C, cache bytes, image-tower bytes, full CLIP bytes) from randomly initialised open_clip."""
    import open_clip

    rows = []
    for name in ("ViT-B-16", "RN50"):
        model = open_clip.create_model(name, pretrained=None)
        dim = (
            int(model.text_projection.shape[1])
            if model.text_projection is not None
            else int(model.visual.output_dim)
        )
        full = sum(p.numel() for p in model.parameters()) * 4
        visual = sum(p.numel() for p in model.visual.parameters()) * 4
        del model
        for classes in (10, 1000):
            rows.append((name, classes, dim, classes * shots * dim * 4, visual, full))
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=10)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rounds = 1 if args.quick else args.rounds
    cmd = "OMP_NUM_THREADS=1 python benchmarks/federated.py" + (" --quick" if args.quick else "")
    print(
        f"# {cmd}\n# {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, 1 thread"
    )

    adapter, feats, images = build_world(shots=16)
    cache = get_federated_state(adapter)
    cache_bytes = sum(t.numel() * t.element_size() for t in cache.values())
    n, k, c = adapter.num_classes, 16, adapter.feature_dim
    assert cache_bytes == n * k * c * 4

    s_feat, t_feat = seconds_per_round(adapter, feats, rounds, args.clients)
    s_img, t_img = seconds_per_round(adapter, images, rounds, args.clients)
    print(
        f"\n## seconds per round: CacheFL, {args.clients} clients x 1 local epoch, {rounds} rounds, tiny world"
    )
    print(f"{'clients hold':32s} {'s/round (all)':>14s} {'s/round (train)':>16s}")
    print(f"{'precomputed CLIP features':32s} {s_feat:14.2f} {t_feat:16.2f}")
    print(f"{'images (encoder every batch)':32s} {s_img:14.2f} {t_img:16.2f}")
    print(
        f"ratio through-encoder / cached: {s_img / s_feat:.1f}x (all), {t_img / t_feat:.1f}x (local training)"
    )

    full_clip = _nbytes(adapter.clip)
    visual = _nbytes(adapter.clip.visual)
    print(f"\n## bytes per client per round (down + up), tiny world: N={n}, K={k}, C={c}")
    print(f"{'what moves':36s} {'bytes':>14s} {'ratio to cache':>15s}")
    for label, b in (
        ("CacheFL cache keys (N*K*C*4)", cache_bytes),
        ("FedAvg of the CLIP image tower", visual),
        ("FedAvg of the whole CLIP", full_clip),
    ):
        print(f"{label:36s} {2 * b:14,d} {b / cache_bytes:15.1f}")
    try:
        from flwr.app import ArrayRecord

        ser = ArrayRecord(cache).count_bytes()
        print(
            f"Flower ArrayRecord.count_bytes() of the cache: {ser:,d} B per transfer "
            f"(+{ser - cache_bytes} B of .npy header and key name)"
        )
    except ImportError:
        pass

    if not args.quick:
        print(
            f"\n## analytic, K={k} shots, float32 (parameter counts from randomly initialised open_clip models)"
        )
        print(
            f"{'model':9s} {'classes':>7s} {'C':>5s} {'cache B':>13s} {'image tower B':>15s} {'full CLIP B':>15s} "
            f"{'tower/cache':>12s} {'full/cache':>11s}"
        )
        for name, classes, dim, cb, vb, fb in analytic_rows(k):
            print(
                f"{name:9s} {classes:7d} {dim:5d} {cb:13,d} {vb:15,d} {fb:15,d} {vb / cb:12.1f} {fb / cb:11.1f}"
            )


if __name__ == "__main__":
    main()
