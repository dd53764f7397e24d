"""Federated benchmark, two parts.

``--part cachefl``: seconds per round (cached features vs through the encoder) and bytes per round
(CacheFL cache vs full-model FedAvg), measured on the tiny world and, analytically, for real CLIPs.
Peers measured in the same run: the same simulation with clients holding images (the frozen encoder
runs every batch) instead of precomputed features; full-model FedAvg bytes (the whole CLIP, and its
image tower) instead of the cache keys.

``--part robust``: test accuracy of the robust aggregation rules against plain FedAvg on digits with
10 IID clients, with no attacker and with one of the 10 clients sending its update scaled by 1e3 or
sign-flipped (x -1, and x -1e3) every round. Peer: plain FedAvg with the norm guard off
(``max_norm_ratio=None``), the rule every robust one must match without an attacker.

    OMP_NUM_THREADS=1 python benchmarks/federated.py                  # both parts
    OMP_NUM_THREADS=1 python benchmarks/federated.py --part robust    # robust aggregation only
    OMP_NUM_THREADS=1 python benchmarks/federated.py --quick          # smoke run
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

from lightning_addons.experiments import TensorSplitsDataModule, build_world, client_datamodules  # noqa: E402
from lightning_addons.federated import FederatedSimulation  # noqa: E402
from lightning_addons.federated.partition import dirichlet_partition  # noqa: E402
from lightning_addons.strategies import Aggregator, get_federated_state  # noqa: E402

#: (label, Aggregator kwargs) of the robust-aggregation part; the first is the unguarded peer.
ROBUST_RULES = (
    ("FedAvg (no guard)", dict(max_norm_ratio=None)),
    ("FedAvg + norm guard (default)", dict()),
    ("coordinate median", dict(rule="median", max_norm_ratio=None)),
    ("trimmed mean (10%)", dict(rule="trimmed_mean", trim_fraction=0.1, max_norm_ratio=None)),
    ("Krum (f=1)", dict(rule="krum", krum_byzantine=1, max_norm_ratio=None)),
    ("Multi-Krum (f=1, m=n-f)", dict(rule="krum", krum_byzantine=1, krum_select=None, max_norm_ratio=None)),
    ("norm-bounded FedAvg", dict(rule="norm_bounded", max_norm_ratio=None)),
)
#: (label, factor applied to the attacker's update ``client - global``; None: no attacker)
ATTACKS = (("clean", None), ("scaled x1e3", 1e3), ("sign-flip x-1", -1.0), ("sign-flip x-1e3", -1e3))
ATTACKER = 3


class _AttackedSimulation(FederatedSimulation):
    """Client ``ATTACKER`` sends ``global + factor * (its update - global)`` every round."""

    factor: float | None = None

    def train_client(self, round, client):
        state, n = super().train_client(round, client)
        if client == ATTACKER and self.factor is not None:
            g = self.global_state
            state = {k: g[k] + self.factor * (v - g[k]) for k, v in state.items()}
        return state, n


def robust_accuracy(kwargs: dict, factor: float | None, rounds: int, seed: int) -> float:
    from lightning_addons.datamodules import DigitsDataModule
    from lightning_addons.federated import FederatedDataModule
    from lightning_addons.modules import ImageClassifier
    from lightning_addons.modules.nn import LeNet5

    torch.manual_seed(seed)
    module = ImageClassifier(LeNet5(width=0.5), lr=3e-3)
    fdm = FederatedDataModule(
        DigitsDataModule(resize=32, batch_size=32, seed=seed),
        num_clients=10,
        partition="iid",
        partition_seed=seed,
    )
    cls = type("Sim", (_AttackedSimulation,), {"factor": factor})
    sim = cls(
        module, fdm, rounds=rounds, aggregator=Aggregator(**kwargs, seed=seed), progress_bar=False, seed=seed
    )
    return float(sim.fit().test_metrics["test_acc"])


def robust_part(
    rounds: int, seeds: list[int], only: list[str] | None = None, attacks: list[str] | None = None
) -> None:
    import logging

    logging.getLogger("lightning_addons").setLevel(
        logging.ERROR
    )  # one rejection per round would flood the table
    print(
        f"\n## robust aggregation: digits (32x32, LeNet-5 width 0.5, Adam 3e-3), 10 IID clients, {rounds} rounds x "
        f"1 local epoch, client {ATTACKER} attacks every round; test accuracy of the best-validation round, "
        f"mean over seeds {seeds}"
    )
    acc: dict[tuple[str, str], float] = {}
    rules = [r for r in ROBUST_RULES if only is None or r[0] in only]
    run_attacks = [a for a in ATTACKS if attacks is None or a[0] in attacks]
    for label, kwargs in rules:
        for attack, factor in run_attacks:
            t = time.perf_counter()
            vals = [robust_accuracy(kwargs, factor, rounds, seed) for seed in seeds]
            acc[label, attack] = sum(vals) / len(vals)
            print(
                f"#   {label:30s} {attack:16s} {acc[label, attack]:.4f} {vals} ({time.perf_counter() - t:.0f} s)",
                flush=True,
            )
    peer = ROBUST_RULES[0][0]
    print(
        f"\n{'rule':30s} "
        + " ".join(f"{a:>16s}" for a, _ in run_attacks)
        + f" {'clean - FedAvg':>15s} {'worst attack - clean':>21s}"
    )
    for label, _ in rules:
        clean = acc[label, "clean"]
        worst = min((acc[label, a] for a, f in run_attacks if f is not None), default=float("nan"))
        print(
            f"{label:30s} "
            + " ".join(f"{acc[label, a]:16.4f}" for a, _ in run_attacks)
            + (f" {100 * (clean - acc[peer, 'clean']):+14.1f}p" if (peer, "clean") in acc else f"{'-':>16s}")
            + (f" {100 * (worst - clean):+20.1f}p" if worst == worst else f"{'-':>22s}")
        )


def _nbytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def seconds_per_round(adapter, data, rounds: int, clients: int, seed: int = 0) -> tuple[float, float]:
    x, y = data["train"]
    parts = dirichlet_partition(y.numpy(), clients, alpha=0.5, min_size=10, seed=seed)
    sim = FederatedSimulation(
        copy.deepcopy(adapter),
        client_datamodules(x, y, parts, 32, seed),
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
    parser.add_argument("--part", choices=["all", "cachefl", "robust"], default="all")
    parser.add_argument("--robust-rounds", type=int, default=8)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--rules", nargs="+", default=None, help="robust part: only these rule labels")
    parser.add_argument(
        "--attacks", nargs="+", default=None, help="robust part: only these attack labels (e.g. clean)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rounds = 1 if args.quick else args.rounds
    cmd = "OMP_NUM_THREADS=1 python benchmarks/federated.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    print(
        f"# {cmd}\n# {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, 1 thread"
    )
    if args.part in ("all", "robust"):
        robust_part(
            2 if args.quick else args.robust_rounds,
            args.seeds[:1] if args.quick else args.seeds,
            args.rules,
            args.attacks,
        )
    if args.part == "robust":
        return

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
