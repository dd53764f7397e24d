"""Spatio-temporal acceptance: attention and RAM STAEformer vs last value and seasonal naive, original units.

Datasets (``--datasets``):

* ``chickenpox``: Chickenpox-Hungary (20 counties, weekly), lookback 8 -> horizon 4; seasonal naive with a
  52-week season (history beyond the lookback from the datamodule).
* ``synthetic``: :func:`~lightning_addons.datamodules.graph_signals.seasonal_graph_signal`, ``--nodes``
  (default 500) nodes, hourly, daily + weekly seasonality diffused over a kNN graph, ``--weeks`` weeks;
  lookback 24 -> horizon 12; seasonal naive daily (24) and weekly (168).
* ``traffic``: METR-LA or PEMS-BAY from ``--traffic-path`` (tsl's folder layout), lookback 12 -> 12;
  seasonal naive daily (288) and weekly (2016).

Models: last value, seasonal naive(s), STAEformer with attention on both axes, RAM on both axes (``mlp``),
RAM on time only; one Forecaster test reports MAE/RMSE in original units (``metrics_space="both"``).
Budget: ``--epochs`` fixed epochs (no early stopping), one CPU thread, training-window ``--stride``;
``--models`` picks the STAEformer variants, ``--lr``/``--batch-size`` override the per-dataset defaults,
``--attention-dropout 0`` is the reference STAEformer's setting (default: the 0.1 dropout, as before).
With ``--json`` every finished row (baseline or trained model, with wall and CPU seconds and the load
average) is written at once, so an interrupted run keeps what it finished. ``--validate`` also scores every
row on the validation split (``val_mae_original``, ...; the last weights, after training), for choosing
settings on validation rather than test error.

Reproduce::

    OMP_NUM_THREADS=1 python benchmarks/ram_spatiotemporal.py --datasets chickenpox,synthetic --epochs 5
    OMP_NUM_THREADS=1 python benchmarks/ram_spatiotemporal.py --datasets traffic --traffic-path data/metr_la
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lightning.pytorch as pl  # noqa: E402
import torch  # noqa: E402

from lightning_addons.data import shared_data_path  # noqa: E402
from lightning_addons.datamodules import (  # noqa: E402
    GraphSignalDataModule,
    TimeSeriesDataModule,
    TrafficGraphDataModule,
)
from lightning_addons.datamodules.graph_signals import seasonal_graph_signal  # noqa: E402
from lightning_addons.modules import Forecaster  # noqa: E402
from lightning_addons.modules.nn import SeasonalNaive, STAEformer  # noqa: E402

warnings.filterwarnings("ignore")


def _trainer(epochs: int, validate: bool = False) -> pl.Trainer:
    # training never validates (fixed epochs, last weights); a ``validate`` trainer scores the val split
    return pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=1.0 if validate else 0,
        num_sanity_val_steps=0,
    )


def _val_metrics(args, module, dm) -> dict:
    """Validation-split MAE/RMSE (scaled and original units) of ``module``; empty without ``--validate``."""
    if not args.validate:
        return {}
    res = _trainer(1, validate=True).validate(module, datamodule=dm, verbose=False)[0]
    return {k: res[k] for k in ("val_mae", "val_mae_original", "val_rmse_original") if k in res}


DATASETS = ("chickenpox", "synthetic", "traffic")


def datasets(args) -> dict:
    """name -> (datamodule factory, seasons of the seasonal-naive baselines, STAEformer sizes)."""
    out = {}
    wanted = args.datasets.split(",")
    if "chickenpox" in wanted:
        path = args.chickenpox or shared_data_path("chickenpox.json")
        out["Chickenpox"] = (
            lambda: GraphSignalDataModule(
                path, lookback=8, horizon=4, batch_size=16, start="2005-01-03", freq="7D", history=52
            ),
            {"seasonal naive (52 weeks)": 52},
            dict(
                input_embedding_dim=16,
                tod_embedding_dim=0,
                dow_embedding_dim=0,
                adaptive_embedding_dim=16,
                d_ff=64,
                num_layers_t=2,
                num_layers_s=2,
            ),
            2e-3,
        )
    if "synthetic" in wanted:
        values, edge_index, edge_weight, dates = seasonal_graph_signal(
            num_nodes=args.nodes, steps=24 * 7 * args.weeks, steps_per_day=24, seed=0
        )
        out[f"Synthetic ({args.nodes} nodes)"] = (
            lambda: TimeSeriesDataModule(
                values,
                lookback=24,
                horizon=12,
                splits=(0.7, 0.1, 0.2),
                batch_size=16,
                stride=args.stride,
                edge_index=edge_index,
                edge_weight=edge_weight,
                dates=dates,
                history=168,
            ),
            {"seasonal naive (daily)": 24, "seasonal naive (weekly)": 168},
            dict(
                input_embedding_dim=16,
                tod_embedding_dim=16,
                dow_embedding_dim=8,
                adaptive_embedding_dim=24,
                steps_per_day=24,
                d_ff=64,
                num_layers_t=1,
                num_layers_s=1,
            ),
            2e-3,
        )
    if "traffic" in wanted:
        out[args.traffic_name] = (
            lambda: TrafficGraphDataModule(
                args.traffic_name,
                path=args.traffic_path,
                lookback=12,
                horizon=12,
                batch_size=16,
                history=2016,
                invalid="mask",
            ),
            {"seasonal naive (daily)": 288, "seasonal naive (weekly)": 2016},
            dict(steps_per_day=288, d_ff=256, num_layers_t=3, num_layers_s=3, checkpoint_chunks=4),
            1e-3,
        )
    return out


VARIANTS = {
    "attention": ("STAEformer/attention", dict(mixer="attention")),
    "mlp": ("STAEformer/mlp (both axes)", dict(mixer="mlp")),
    "mlp-time": ("STAEformer/mlp (time only)", dict(temporal_mixer="mlp", spatial_mixer="attention")),
}


def _write(args, rows: list[dict]) -> None:
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps({"argv": sys.argv[1:], "runs": rows}, indent=1))
        tmp.replace(path)


def run(args) -> list[dict]:
    torch.set_num_threads(1)
    rows = []
    for name, (make_dm, seasons, sizes, lr) in datasets(args).items():
        lr = args.lr if args.lr is not None else lr
        dm = make_dm()
        if args.batch_size is not None:
            dm.batch_size = args.batch_size
        dm.setup()
        n, t, h = dm.num_nodes, dm.lookback, dm.horizon
        print(f"\n== {name}: {n} nodes, lookback {t} -> horizon {h}, {args.epochs} epochs, original units ==")
        baselines = {"last value": SeasonalNaive(t, h, season=1)}
        baselines.update({k: SeasonalNaive(t, h, season=s) for k, s in seasons.items()})
        for model_name, model in baselines.items():
            module = Forecaster(model, metrics_space="both")
            res = _trainer(1).test(module, datamodule=dm, verbose=False)[0]
            val = _val_metrics(args, module, dm)
            rows.append({"dataset": name, "model": model_name, "seed": None, **_metrics(res), **val})
            _write(args, rows)
            print(
                f"  {model_name:<30} MAE {res['test_mae_original']:.4f} RMSE {res['test_rmse_original']:.4f}"
                + _val_text(val)
            )
        for key in args.models:
            model_name, kw = VARIANTS[key]
            for seed in args.seeds:
                pl.seed_everything(seed, verbose=False)
                model = STAEformer(
                    num_nodes=n,
                    window=t,
                    horizon=h,
                    n_heads=4,
                    dropout=0.1,
                    attention_dropout=args.attention_dropout,
                    **sizes,
                    **kw,
                )
                module = Forecaster(model, loss="mae", lr=lr, metrics_space="both")
                load = os.getloadavg()[0]
                t0, c0 = time.perf_counter(), time.process_time()
                trainer = _trainer(args.epochs)
                trainer.fit(module, datamodule=dm)
                fit_sec = time.perf_counter() - t0
                res = trainer.test(module, datamodule=dm, verbose=False)[0]
                sec, cpu = time.perf_counter() - t0, time.process_time() - c0
                val = _val_metrics(args, module, dm)  # after the timing: not part of the cost
                rows.append(
                    {
                        "dataset": name,
                        "model": model_name,
                        "seed": seed,
                        "epochs": args.epochs,
                        "lr": lr,
                        "batch_size": dm.batch_size,
                        "attention_dropout": 0.1
                        if args.attention_dropout is None
                        else args.attention_dropout,
                        "train_steps": trainer.global_step,
                        "seconds": sec,
                        "fit_seconds": fit_sec,
                        "cpu_seconds": cpu,
                        "load_start": load,
                        "load_end": os.getloadavg()[0],
                        **_metrics(res),
                        **val,
                    }
                )
                _write(args, rows)
                print(
                    f"  {model_name:<30} seed {seed}: MAE {res['test_mae_original']:.4f} "
                    f"RMSE {res['test_rmse_original']:.4f}{_val_text(val)} ({sec:.0f} s wall, {cpu:.0f} s "
                    f"CPU, {trainer.global_step} steps, load {load:.1f})",
                    flush=True,
                )
        _verdict(rows, name)
    return rows


def _metrics(res: dict) -> dict:
    return {k: res[k] for k in ("test_mae", "test_mae_original", "test_rmse_original") if k in res}


def _val_text(val: dict) -> str:
    return f" | val MAE {val['val_mae_original']:.4f}" if val else ""


def _verdict(rows: list[dict], dataset: str) -> None:
    mine = [r for r in rows if r["dataset"] == dataset]
    if not any(r["model"].startswith("STAEformer") for r in mine):
        return
    best_base = min(r["test_mae_original"] for r in mine if not r["model"].startswith("STAEformer"))
    for model in sorted({r["model"] for r in mine if r["model"].startswith("STAEformer")}):
        maes = [r["test_mae_original"] for r in mine if r["model"] == model]
        mean = sum(maes) / len(maes)
        verdict = "beats" if max(maes) < best_base else "does NOT beat"
        print(
            f"  -> {model}: mean MAE {mean:.4f}, worst seed {max(maes):.4f} {verdict} the best baseline "
            f"({best_base:.4f}, {100 * (mean / best_base - 1):+.1f}%)"
        )


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", default="chickenpox,synthetic")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0])
    parser.add_argument(
        "--models",
        type=_models,
        default=list(VARIANTS),
        help=f"comma-separated STAEformer variants out of {list(VARIANTS)} (default: all)",
    )
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default: per dataset)")
    parser.add_argument("--batch-size", type=int, default=None, help="batch size (default: per dataset)")
    parser.add_argument(
        "--attention-dropout",
        type=float,
        default=None,
        help="dropout on the attention weights (default: the 0.1 dropout; the reference STAEformer: 0, which "
        "keeps CPU training on the fused SDPA kernel, about 5x faster at 500 nodes)",
    )
    parser.add_argument("--nodes", type=int, default=500)
    parser.add_argument("--weeks", type=int, default=8)
    parser.add_argument("--stride", type=int, default=4, help="training-window stride (synthetic)")
    parser.add_argument(
        "--chickenpox", default=None, help="chickenpox.json (default: the shared data folder)"
    )
    parser.add_argument("--traffic-path", default=None)
    parser.add_argument("--traffic-name", default="METR-LA", choices=["METR-LA", "PEMS-BAY"])
    parser.add_argument("--json", default=None)
    parser.add_argument(
        "--validate",
        action="store_true",
        help="also score every row on the validation split (val_mae_original, ...), for tuning on validation",
    )
    args = parser.parse_args(argv)
    unknown = [d for d in args.datasets.split(",") if d not in DATASETS]
    if unknown:
        parser.error(f"--datasets must be a comma-separated subset of {list(DATASETS)}, got {unknown}.")
    if "traffic" in args.datasets.split(",") and not args.traffic_path:
        parser.error("--datasets traffic needs --traffic-path (a folder in tsl's METR-LA/PEMS-BAY layout).")
    if args.lr is not None and not args.lr > 0:
        parser.error(f"--lr must be positive, got {args.lr}.")
    if args.batch_size is not None and args.batch_size <= 0:
        parser.error(f"--batch-size must be a positive integer, got {args.batch_size}.")
    t0 = time.perf_counter()
    rows = run(args)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    _write(args, rows)
    return rows


def _models(text: str) -> list[str]:
    keys = [k.strip() for k in text.split(",") if k.strip()]
    bad = [k for k in keys if k not in VARIANTS]
    if bad or not keys:
        raise argparse.ArgumentTypeError(
            f"--models must be a comma-separated subset of {list(VARIANTS)}, got {text!r}."
        )
    return keys


if __name__ == "__main__":
    main()
