"""In-repo partitioners vs Flower Datasets' (``flwr-datasets``): label skew, client sizes and CPU time.

    OMP_NUM_THREADS=1 python benchmarks/partitioners_flower.py            # digits + 60,000 labels, seeds 0-2
    OMP_NUM_THREADS=1 python benchmarks/partitioners_flower.py --digits-only --seeds 30   # tighter means
    OMP_NUM_THREADS=1 python benchmarks/partitioners_flower.py --quick    # digits only, seed 0

Each pair runs at the same settings (10 clients; Dirichlet alpha 0.1 / 0.5 / 1.0 with ``min_size`` 10;
2 classes per client; 2 shards per client) and the same seeds. Statistics per partition, then averaged over
the seeds: client sizes (mean, coefficient of variation, min, max), samples on no client, label skew (mean
over clients of the largest class share, mean number of classes present, mean total-variation distance of
a client's label distribution from the global one) and CPU seconds per call (``time.process_time``, this
process only; Flower's include building the ``datasets.Dataset`` of labels). Peer: the other library's
partitioner in the same run.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import warnings
from datetime import datetime, timezone

import numpy as np

sys.path.insert(0, ".")  # run from the repository root without installing

from lightning_addons.federated.partition import label_histogram, partition  # noqa: E402

PAIRS = [
    ("iid", {}),
    ("dirichlet", {"alpha": 0.1}),
    ("dirichlet", {"alpha": 0.5}),
    ("dirichlet", {"alpha": 1.0}),
    ("pathological", {"classes_per_client": 2}),
    ("shards", {"shards_per_client": 2}),
]


FORMAT = {
    "size_mean": "{:.0f}",
    "size_min": "{:.0f}",
    "size_max": "{:.0f}",
    "dropped": "{:.0f}",
    "classes": "{:.2f}",
}


def stats(labels: np.ndarray, parts: list[np.ndarray]) -> dict[str, float]:
    hist = label_histogram(labels, parts, num_classes=int(labels.max()) + 1).astype(float)
    sizes = hist.sum(1)
    share = hist / np.maximum(sizes[:, None], 1)
    glob = np.bincount(labels) / len(labels)
    return {
        "size_mean": sizes.mean(),
        "size_cv": sizes.std() / sizes.mean(),
        "size_min": sizes.min(),
        "size_max": sizes.max(),
        "dropped": len(labels) - sizes.sum(),
        "max_share": share.max(1).mean(),
        "classes": (hist > 0).sum(1).mean(),
        "tv": 0.5 * np.abs(share - glob).sum(1).mean(),
    }


def run(labels: np.ndarray, method: str, kwargs: dict, seed: int, clients: int) -> tuple[dict, float]:
    t0 = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Flower's own warnings (unused classes, redraws, dropped remainder)
        parts = partition(labels, clients, method, seed=seed, min_size=10, **kwargs)
    return stats(labels, parts), time.process_time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1")
    ap.add_argument("--digits-only", action="store_true")
    args = ap.parse_args()
    seeds = [0] if args.quick else list(range(args.seeds))
    from sklearn.datasets import load_digits

    sets = {"digits (1,797)": load_digits().target.astype(np.int64)}
    if not (args.quick or args.digits_only):
        sets["60,000 balanced, shuffled"] = np.random.default_rng(123).permutation(
            np.repeat(np.arange(10), 6000)
        )
    print("# python benchmarks/partitioners_flower.py " + " ".join(sys.argv[1:]))
    print(
        f"# {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, seeds {seeds}"
    )
    run(sets["digits (1,797)"], "flwr-iid", {}, 0, args.clients)  # warm-up: import datasets / flwr_datasets
    cols = ["size_mean", "size_cv", "size_min", "size_max", "dropped", "max_share", "classes", "tv"]
    for name, labels in sets.items():
        print(f"\n## {name}: {args.clients} clients, mean over seeds {seeds}\n")
        print("| partition | " + " | ".join(cols) + " | CPU s | CPU ratio flwr/in-repo |")
        print("|" + " --- |" * (len(cols) + 3))
        for method, kwargs in PAIRS:
            cpu = {}
            for impl in (method, f"flwr-{method}"):
                rows = [run(labels, impl, kwargs, s, args.clients) for s in seeds]
                mean = {c: float(np.mean([r[0][c] for r in rows])) for c in cols}
                cpu[impl] = float(np.median([r[1] for r in rows]))
                tag = impl + "".join(f" {k}={v}" for k, v in kwargs.items())
                ratio = f"{cpu[impl] / cpu[method]:.1f}" if impl != method else ""
                print(
                    f"| {tag} | "
                    + " | ".join(FORMAT.get(c, "{:.3f}").format(mean[c]) for c in cols)
                    + f" | {cpu[impl]:.4f} | {ratio} |"
                )


if __name__ == "__main__":
    main()
