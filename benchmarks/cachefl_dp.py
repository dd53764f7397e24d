"""CacheFL under client-level differential privacy: test accuracy at epsilon 1, 4 and 8 (delta 1e-5) over
20 rounds on the tiny world, with the epsilon the accountant reports.

    OMP_NUM_THREADS=1 python benchmarks/cachefl_dp.py            # full (several minutes on 2 CPU cores)
    OMP_NUM_THREADS=1 python benchmarks/cachefl_dp.py --quick    # smoke run

Mechanism: DP-FedAvg (``lightning_addons.strategies.privacy.ClientDP``): Poisson client sampling at
``--sample-rate``, each client's cache-key update clipped to ``--clip-norm`` (default: the median update
norm of a non-private probe round, measured here), Gaussian noise on the sum, noise multiplier
calibrated by Opacus's RDP accountant for the target epsilon over ``--rounds`` rounds.

Peers measured in the same run: zero-shot CLIP and the training-free synthetic cache (no training, no
privacy cost), and non-private CacheFL with the same clients, rounds and expected clients per round.
The best round is chosen on the server's validation split (server data, outside the clients' privacy
unit); the test accuracy is that round's.
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import sys
import time
from datetime import datetime, timezone

import torch

sys.path.insert(0, ".")  # run from the repository root without installing

from lightning_addons.experiments import TensorSplitsDataModule, build_world, client_datamodules  # noqa: E402
from lightning_addons.federated import FederatedSimulation  # noqa: E402
from lightning_addons.federated.partition import dirichlet_partition  # noqa: E402
from lightning_addons.strategies.privacy import ClientDP  # noqa: E402


class _Norms:
    """Records each client's update norm (federated callback) in a probe round."""

    def __init__(self) -> None:
        self.norms: list[float] = []

    def on_round_start(self, simulation, round, clients):
        self.start = {k: v.clone() for k, v in simulation.global_state.items()}

    def on_client_end(self, simulation, round, client, module):
        from lightning_addons.strategies.aggregation import global_norm
        from lightning_addons.strategies.state import get_federated_state

        state = get_federated_state(module)
        self.norms.append(global_norm({k: state[k] - self.start[k] for k in state}))

    def on_round_end(self, simulation, round, metrics):
        pass


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--sample-rate", type=float, default=0.2)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--local-epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=1e-2, help="clients' learning rate of the cache keys")
    parser.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration of the partition")
    parser.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 4.0, 8.0])
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--clip-norm", type=float, default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args(argv)
    if args.quick:
        args.clients, args.rounds, args.epsilons, args.seeds = 20, 2, [8.0], [0]
    torch.set_num_threads(1)
    cmd = "OMP_NUM_THREADS=1 python benchmarks/cachefl_dp.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    print(
        f"# {cmd}\n# {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, 1 thread"
    )
    t_start = time.perf_counter()
    adapter, feats, _ = build_world(shots=16, lr=args.lr)
    data = TensorSplitsDataModule(feats)
    x, y = feats["train"]
    print(
        f"# tiny world: {len(x)} private training samples over {args.clients} clients (Dirichlet {args.alpha}), "
        f"sample rate {args.sample_rate} (expected {args.sample_rate * args.clients:.0f} clients/round), "
        f"{args.rounds} rounds x {args.local_epochs} local epochs (lr {args.lr}), delta {args.delta}"
    )
    base = dict(rounds=args.rounds, local_epochs=args.local_epochs, eval_datamodule=data, progress_bar=False)
    rows: dict[str, list[dict]] = {}
    for seed in args.seeds:
        parts = dirichlet_partition(y.numpy(), args.clients, alpha=args.alpha, min_size=2, seed=seed)
        clients = client_datamodules(x, y, parts, 32, seed)
        ref = FederatedSimulation(copy.deepcopy(adapter), clients, seed=seed, **{**base, "rounds": 1})
        zero = ref.evaluate(stage="test")
        rows.setdefault("zero-shot CLIP", []).append({"acc": zero["test_acc_zero_shot"]})
        rows.setdefault("training-free cache", []).append({"acc": zero["test_acc_training_free"]})

        clip_norm = args.clip_norm
        if clip_norm is None:  # the median update norm of one non-private round of every client
            probe = _Norms()
            FederatedSimulation(
                copy.deepcopy(adapter), clients, seed=seed, callbacks=[probe], **{**base, "rounds": 1}
            ).run_round(0)
            clip_norm = statistics.median(probe.norms)
            print(
                f"# seed {seed}: update norms of a probe round: median {clip_norm:.4f}, "
                f"max {max(probe.norms):.4f} -> clip_norm {clip_norm:.4f}"
            )

        t0 = time.perf_counter()
        plain = FederatedSimulation(
            copy.deepcopy(adapter), clients, seed=seed, fraction_fit=args.sample_rate, **base
        ).fit()
        rows.setdefault("CacheFL, no privacy", []).append(
            {"acc": plain.test_metrics["test_acc"], "s": time.perf_counter() - t0}
        )
        print(
            f"# seed {seed}: zero-shot {zero['test_acc_zero_shot']:.4f}, training-free "
            f"{zero['test_acc_training_free']:.4f}, CacheFL no privacy {plain.test_metrics['test_acc']:.4f} "
            f"(best round {plain.best_round}), {rows['CacheFL, no privacy'][-1]['s']:.0f} s",
            flush=True,
        )
        for eps in args.epsilons:
            dp = ClientDP(
                clip_norm=clip_norm,
                sample_rate=args.sample_rate,
                delta=args.delta,
                target_epsilon=eps,
                rounds=args.rounds,
                seed=seed,
            )
            t0 = time.perf_counter()
            res = FederatedSimulation(copy.deepcopy(adapter), clients, seed=seed, privacy=dp, **base).fit()
            rows.setdefault(f"CacheFL, DP epsilon {eps:g}", []).append(
                {
                    "acc": res.test_metrics["test_acc"],
                    "s": time.perf_counter() - t0,
                    "z": dp.noise_multiplier,
                    "spent": res.privacy["epsilon"],
                    "clipped": sum(h["clipped"] for h in dp.history)
                    / max(1, sum(h["participants"] for h in dp.history)),
                }
            )
            r = rows[f"CacheFL, DP epsilon {eps:g}"][-1]
            print(
                f"# seed {seed} epsilon {eps:g}: z={r['z']:.3f}, spent {r['spent']:.4f}, test acc {r['acc']:.4f}, "
                f"best round {res.best_round}, {r['clipped']:.0%} of updates clipped, {r['s']:.0f} s",
                flush=True,
            )

    print(f"\n## CacheFL under client-level DP (seeds {args.seeds}, mean over seeds)")
    print(
        f"{'method':28s} {'test acc':>9s} {'noise z':>8s} {'epsilon spent':>14s} {'clipped':>8s} {'s/run':>7s}"
    )
    plain_acc = statistics.mean(r["acc"] for r in rows["CacheFL, no privacy"])
    for name, rs in rows.items():
        acc = statistics.mean(r["acc"] for r in rs)
        z = f"{statistics.mean(r['z'] for r in rs):.3f}" if "z" in rs[0] else "-"
        spent = f"{statistics.mean(r['spent'] for r in rs):.4f}" if "spent" in rs[0] else "-"
        clipped = f"{statistics.mean(r['clipped'] for r in rs):.0%}" if "clipped" in rs[0] else "-"
        secs = f"{statistics.mean(r['s'] for r in rs):.0f}" if "s" in rs[0] else "-"
        print(f"{name:28s} {acc:9.4f} {z:>8s} {spent:>14s} {clipped:>8s} {secs:>7s}")
    print(
        f"ratio to non-private CacheFL is acc / {plain_acc:.4f}; total {time.perf_counter() - t_start:.0f} s"
    )


if __name__ == "__main__":
    main()
