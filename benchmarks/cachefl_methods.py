"""CacheFL against the federated CLIP baselines users compare with, on the embedded tiny world.

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/cachefl_methods.py --out /tmp/cachefl_methods.json
    OMP_NUM_THREADS=1 python benchmarks/cachefl_methods.py --quick      # smoke run (1 alpha, 1 seed, 2 rounds)

Per Dirichlet ``alpha`` and seed (the partition seed and the training seed), on the same partitions,
clients, schedule (``--rounds`` x ``--local-epochs``, 10 clients, all sampled) and server validation/test
splits, every method's test accuracy at its best *validation* round, the bytes it exchanges and the
client CPU seconds it costs:

* ``cachefl``: FedAvg of the Tip-Adapter cache keys (``CacheCLIPAdapter``, the synthetic cache);
* ``promptfl``: FedAvg of CoOp context vectors (``PromptCLIPClassifier``, context initialised from the
  zero-shot template ``'a photo of the number: "'``, so it starts from zero-shot CLIP as CacheFL does);
* ``adapter``: FedAvg of FedCLIP's attention adapter (``AdapterCLIPClassifier``, batch norm);
* ``local_only``: each client fine-tunes the cache alone for ``rounds * local_epochs`` epochs (mean);
* ``centralised``: cache fine-tuning on the pooled training data (one client, same schedule);
* ``full_encoder``: FedAvg of the whole CLIP image tower (``FullEncoderClassifier``, on images);
* zero-shot CLIP and the training-free cache are reported once (no training).

Learning rates: the cache's 1e-3 (as ``run_cachefl``); PromptFL 1e-2 and the adapter 1e-3, each picked on the
server's *validation* accuracy at (alpha 0.5, seed 0, 20 rounds x 5 epochs) from {2e-3, 1e-2, 3e-2} and {1e-3,
1e-2} (1e-2 tied 3e-2 for the prompt and 1e-3 tied 1e-2 for the adapter; the first of each tie was kept).

Every method but ``full_encoder`` trains on the cached CLIP image features (PromptFL runs the frozen text
tower on every step; its image features are cached). CPU seconds are ``time.process_time`` of this
process (one thread), not wall time: ``client CPU s/round`` is the CPU time of local training summed
over the round's clients (Lightning's per-fit overhead included), ``run CPU s`` the whole method with
server evaluation. Bytes are the exact federated-state payload (down + up), per round over all clients.

The same cache/local-only/centralised/full-encoder code paths as ``lightning_addons.experiments.cachefl``
(``run_cachefl``) are reused through the public API (``build_world``, ``FederatedSimulation``,
``local_only``, ``FullEncoderClassifier``), with the same partitions and seeds.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Subset, TensorDataset

sys.path.insert(0, ".")  # run from the repository root without installing

from lightning_addons.experiments.cachefl import (  # noqa: E402
    FullEncoderClassifier,
    TensorSplitsDataModule,
    build_world,
)
from lightning_addons.federated import ClientDataModule, FederatedSimulation  # noqa: E402
from lightning_addons.federated.partition import dirichlet_partition  # noqa: E402
from lightning_addons.federated.quiet import quiet_lightning  # noqa: E402
from lightning_addons.federated.simulation import FederatedCallback, local_only  # noqa: E402
from lightning_addons.modules import AdapterCLIPClassifier, PromptCLIPClassifier  # noqa: E402

METHODS = ("cachefl", "promptfl", "adapter", "local_only", "centralised", "full_encoder")
LABELS = {
    "zero_shot": "zero-shot CLIP",
    "training_free": "training-free synthetic cache",
    "cachefl": "CacheFL (cache keys)",
    "promptfl": "PromptFL (CoOp context)",
    "adapter": "FedCLIP-style attention adapter",
    "local_only": "local-only cache (mean over clients)",
    "centralised": "centralised cache fine-tuning",
    "full_encoder": "full-encoder FedAvg (image tower)",
}
PROMPT_INIT = 'a photo of the number: "'  # the zero-shot template up to the class name
PROMPT_SUFFIX = '".'


class ClientCPU(FederatedCallback):
    """CPU seconds (``time.process_time``) of local training, summed over the clients of each round."""

    def __init__(self) -> None:
        self.per_round: list[float] = []
        self._mark = 0.0

    def on_round_start(self, simulation, round, clients) -> None:
        self.per_round.append(0.0)
        self._mark = time.process_time()

    def on_client_end(self, simulation, round, client, module) -> None:
        now = time.process_time()
        self.per_round[-1] += now - self._mark
        self._mark = now


def make_clients(x, y, parts, batch_size: int, seed: int) -> list[ClientDataModule]:
    ds = TensorDataset(x, y)
    return [
        ClientDataModule(Subset(ds, p.tolist()), batch_size=batch_size, client_id=k, seed=seed)
        for k, p in enumerate(parts)
    ]


def federate(module, clients, eval_dm, rounds: int, local_epochs: int, seed: int) -> dict[str, Any]:
    cpu = ClientCPU()
    t0 = time.process_time()
    res = FederatedSimulation(
        module,
        clients,
        rounds=rounds,
        local_epochs=local_epochs,
        eval_datamodule=eval_dm,
        progress_bar=False,
        seed=seed,
        callbacks=[cpu],
    ).fit()
    comm = res.communication
    return {
        "acc": res.test_metrics["test_acc"],
        "best_round": res.best_round,
        "best_val_acc": res.best_metric,
        "bytes_total": comm["bytes_total"],
        "bytes_per_round": comm["bytes_total"] / rounds,
        "bytes_per_client_round": comm["bytes_per_client_round"],
        "client_cpu_s_per_round": float(np.mean(cpu.per_round)),
        "run_cpu_s": time.process_time() - t0,
    }


def run(args) -> dict[str, Any]:
    torch.set_num_threads(1)
    t_start = time.process_time()
    adapter, feats, images = build_world(shots=args.shots, lr=args.lr)
    eval_features = TensorSplitsDataModule(feats)
    with quiet_lightning():
        import lightning.pytorch as pl

        ref = pl.Trainer(
            accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
        ).test(copy.deepcopy(adapter), datamodule=eval_features, verbose=False)[0]
    report: dict[str, Any] = {
        "config": {k: v for k, v in vars(args).items() if k not in ("out", "quick")},
        "zero_shot": float(ref["test_acc_zero_shot"]),
        "training_free": float(ref["test_acc_training_free"]),
        "world_cpu_s": time.process_time() - t_start,
        "rows": [],
        "complete": False,
    }
    print(
        f"# world: cache {tuple(adapter.cache_keys.shape)}, zero-shot {report['zero_shot']:.4f}, training-free "
        f"{report['training_free']:.4f} ({report['world_cpu_s']:.0f} CPU s)",
        flush=True,
    )
    x_tr, y_tr = feats["train"]

    def save() -> None:
        if args.out:
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(out.name + ".tmp")
            tmp.write_text(json.dumps(report, indent=2))
            tmp.replace(out)

    # the cheap methods on every (alpha, seed) first, the full-encoder runs (images through the tower) last
    cheap = [m for m in args.methods if m != "full_encoder"]
    units = [(alpha, seed, cheap) for alpha in args.alphas for seed in args.seeds]
    if "full_encoder" in args.methods:
        units += [
            (a, s, ["full_encoder"]) for s in args.seeds[: args.full_encoder_seeds] for a in args.alphas
        ]
    for alpha, seed, methods in units:
        parts = dirichlet_partition(
            y_tr.numpy(), args.clients, alpha=alpha, min_size=args.min_size, seed=seed
        )
        clients = make_clients(x_tr, y_tr, parts, args.batch_size, seed)
        sched = dict(rounds=args.rounds, local_epochs=args.local_epochs, seed=seed)
        for method in methods:
            t0 = time.process_time()
            row: dict[str, Any] = {"alpha": alpha, "seed": seed, "method": method}
            if method == "cachefl":
                row.update(federate(copy.deepcopy(adapter), clients, eval_features, **sched))
            elif method == "promptfl":
                torch.manual_seed(seed)
                module = PromptCLIPClassifier(
                    context_init=PROMPT_INIT, suffix=PROMPT_SUFFIX, lr=args.prompt_lr, seed=seed
                )
                row.update(federate(module, clients, eval_features, **sched))
            elif method == "adapter":
                module = AdapterCLIPClassifier(lr=args.adapter_lr, seed=seed)
                row.update(federate(module, clients, eval_features, **sched))
            elif method == "local_only":
                lo = local_only(
                    copy.deepcopy(adapter),
                    clients,
                    epochs=args.rounds * args.local_epochs,
                    eval_datamodule=eval_features,
                    seed=seed,
                )
                row.update(acc=lo["mean"]["test_acc"], per_client=[m["test_acc"] for m in lo["per_client"]])
                row.update(bytes_total=0.0, bytes_per_round=0.0, run_cpu_s=time.process_time() - t0)
            elif method == "centralised":
                pooled = [ClientDataModule(TensorDataset(x_tr, y_tr), batch_size=args.batch_size, seed=seed)]
                row.update(federate(copy.deepcopy(adapter), pooled, eval_features, **sched))
                row.update(bytes_total=0.0, bytes_per_round=0.0, bytes_per_client_round=0.0)
            elif method == "full_encoder":
                xi, yi = images["train"]
                torch.manual_seed(seed)
                full = FullEncoderClassifier(adapter, lr=args.full_encoder_lr)
                img_clients = make_clients(xi, yi, parts, args.batch_size, seed)
                row.update(federate(full, img_clients, TensorSplitsDataModule(images), **sched))
            report["rows"].append(row)
            print(
                f"alpha={alpha} seed={seed} {method:12s} acc {row['acc']:.4f}  bytes/round "
                f"{row.get('bytes_per_round', 0):12,.0f}  {time.process_time() - t0:6.1f} CPU s",
                flush=True,
            )
            save()
    report["summary"] = summarise(report["rows"])
    report["cpu_s"] = time.process_time() - t_start
    report["complete"] = True
    save()
    return report


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for alpha in sorted({r["alpha"] for r in rows}):
        block: dict[str, dict[str, float]] = {}
        for method in METHODS:
            sub = [r for r in rows if r["alpha"] == alpha and r["method"] == method]
            if not sub:
                continue
            acc = [r["acc"] for r in sub]
            block[method] = {
                "acc_mean": float(np.mean(acc)),
                "acc_std": float(np.std(acc)),
                "n": len(sub),
                "bytes_per_round": float(np.mean([r.get("bytes_per_round", 0.0) for r in sub])),
                "client_cpu_s_per_round": float(
                    np.mean([r.get("client_cpu_s_per_round", np.nan) for r in sub])
                ),
                "run_cpu_s": float(np.mean([r["run_cpu_s"] for r in sub])),
            }
        out[str(alpha)] = block
    return out


def format_report(report: dict[str, Any]) -> str:
    lines = []
    for alpha, block in report["summary"].items():
        lines.append(
            f"\n## Dirichlet alpha = {alpha} (test accuracy at the best validation round, mean +/- std)"
        )
        lines.append(
            f"{'method':38s} {'accuracy':>17s} {'n':>2s} {'bytes/round':>12s} {'client CPU s/round':>19s} "
            f"{'run CPU s':>9s}"
        )
        for key in ("zero_shot", "training_free"):
            lines.append(
                f"{LABELS[key]:38s} {report[key]:.4f}            {'-':>4s} {0:12,d} {'-':>19s} {'-':>9s}"
            )
        for method, b in block.items():
            cpu = b["client_cpu_s_per_round"]
            cpu_txt = f"{cpu:19.2f}" if np.isfinite(cpu) else f"{'-':>19s}"
            lines.append(
                f"{LABELS[method]:38s} {b['acc_mean']:.4f} +/- {b['acc_std']:.4f} {b['n']:2d} "
                f"{b['bytes_per_round']:12,.0f} {cpu_txt} {b['run_cpu_s']:9.1f}"
            )
        if "cachefl" in block:
            c = block["cachefl"]["acc_mean"]
            beats = [m for m, b in block.items() if m != "cachefl" and b["acc_mean"] > c]
            lines.append(f"methods above CacheFL here: {', '.join(beats) if beats else 'none'}")
            for m in ("promptfl", "adapter", "full_encoder"):
                if m in block and block[m]["bytes_per_round"] > 0:
                    ratio = block["cachefl"]["bytes_per_round"] / block[m]["bytes_per_round"]
                    lines.append(f"CacheFL sends {ratio:.2f}x the bytes of {m}")
    lines.append(f"\nwhole run: {report['cpu_s']:.0f} CPU s (one thread)")
    return "\n".join(lines)


def print_saved(paths: list[str]) -> dict[str, Any]:
    """The table of one or more (possibly unfinished) results files of this script, rows pooled."""
    reports = [json.loads(Path(p).read_text()) for p in paths]
    first = reports[0]
    rows = [r for rep in reports for r in rep["rows"]]
    merged = {
        "zero_shot": first["zero_shot"],
        "training_free": first["training_free"],
        "rows": rows,
        "summary": summarise(rows),
        "cpu_s": sum(
            rep.get("cpu_s", sum(r["run_cpu_s"] for r in rep["rows"]) + rep["world_cpu_s"]) for rep in reports
        ),
    }
    print(
        f"# results of {', '.join(paths)} ({'complete' if all(r['complete'] for r in reports) else 'UNFINISHED'})"
    )
    print(format_report(merged))
    return merged


def main(argv=None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--alphas", type=float, nargs="+", default=[0.1, 0.5])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--local-epochs", type=int, default=5)
    p.add_argument("--shots", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--min-size", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-3, help="CacheFL / local-only / centralised (cache keys)")
    p.add_argument("--prompt-lr", type=float, default=1e-2)
    p.add_argument("--adapter-lr", type=float, default=1e-3)
    p.add_argument("--full-encoder-lr", type=float, default=1e-4)
    p.add_argument("--full-encoder-seeds", type=int, default=3, help="run full_encoder on the first N seeds")
    p.add_argument("--out", default=None, help="results JSON, rewritten after every method")
    p.add_argument("--quick", action="store_true")
    p.add_argument(
        "--report", nargs="+", default=None, help="only print the table of earlier results JSON files"
    )
    args = p.parse_args(argv)
    if args.report:
        return print_saved(args.report)
    for name in ("clients", "rounds", "local_epochs", "shots", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if args.quick:
        args.alphas, args.seeds, args.rounds, args.local_epochs = [0.5], [0], 2, 1
    cmd = "OMP_NUM_THREADS=1 python benchmarks/cachefl_methods.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    print(
        f"# {cmd}\n# {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, 1 thread",
        flush=True,
    )
    report = run(args)
    print(format_report(report))
    return report


if __name__ == "__main__":
    main()
