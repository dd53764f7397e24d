"""Lightning-side fault world: pruning resumes, an unwritable auditor ``save_dir``, bad time series.

Run as a script by the fault tests (a fresh process, as a user would)::

    python _faults_lightning_world.py prune-resume CKPT SETTINGS_JSON OUT_JSON
        # resume CKPT with AnomalyFilterPruning(**SETTINGS) ("null": without the callback); writes
        # {"pruned_filters", "pruned_nonzero", "epoch"} and exits 0, or fails with the error
    python _faults_lightning_world.py audit-unwritable SAVE_DIR MARKER
        # fit with GMMFilterAuditor(save_dir=SAVE_DIR); MARKER is written if a training step ran
    python _faults_lightning_world.py series FAULT OUT_JSON
        # TimeSeriesDataModule(values with FAULT, invalid="raise") setup: fails with the error, and writes
        # what invalid="mask" does with it to OUT_JSON first
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch

# (each mode imports only what it needs: these processes are started once per fault)

#: the pruning of the checkpoint every resume starts from
WRITE_SETTINGS = dict(criterion="random", amount=0.25, epochs=[1], seed=3)


def make_trainer(root: str, callbacks=(), **kw) -> pl.Trainer:
    opts = dict(
        accelerator="cpu", max_epochs=1, limit_train_batches=2, limit_val_batches=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, default_root_dir=root, callbacks=list(callbacks),
    )  # fmt: skip
    opts.update(kw)
    return pl.Trainer(**opts)


def alexnet(seed: int):
    from lightning_addons.modules import ImageClassifier
    from lightning_addons.modules.nn import AlexNetSmall

    pl.seed_everything(seed, verbose=False)
    return ImageClassifier(AlexNetSmall(width=0.25), lr=3e-3)


def write_pruned_checkpoint(folder: Path) -> tuple[Path, dict[str, list[int]]]:
    """2 epochs with pruning after epoch 1; returns (last.ckpt, the pruned filters)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lightning_addons.callbacks import AnomalyFilterPruning
    from lightning_addons.datamodules import DigitsDataModule

    pruning = AnomalyFilterPruning(**WRITE_SETTINGS)
    ckpt = ModelCheckpoint(dirpath=str(folder), save_last=True)
    trainer = make_trainer(str(folder), [pruning, ckpt], max_epochs=2, enable_checkpointing=True)
    trainer.fit(alexnet(0), DigitsDataModule(resize=32))
    return folder / "last.ckpt", pruning.pruned_filters


def prune_resume(ckpt: str, settings_json: str, out: str) -> None:
    from lightning_addons.callbacks import AnomalyFilterPruning
    from lightning_addons.datamodules import DigitsDataModule

    settings = json.loads(settings_json)
    callbacks = [AnomalyFilterPruning(**settings)] if settings is not None else []
    module = alexnet(7)
    trainer = make_trainer(str(Path(out).parent), callbacks, max_epochs=4)
    trainer.fit(module, DigitsDataModule(resize=32), ckpt_path=ckpt)
    modules = dict(module.named_modules())
    pruned = callbacks[0].pruned_filters
    nonzero = {
        layer: int(torch.count_nonzero(modules[layer].weight.detach()[idx])) for layer, idx in pruned.items()
    }
    Path(out).write_text(
        json.dumps({"pruned_filters": pruned, "pruned_nonzero": nonzero, "epoch": module.current_epoch})
    )


class _StepMarker(pl.Callback):
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def on_train_batch_start(self, *args) -> None:
        Path(self.marker).write_text("a training step ran")


def audit_unwritable(save_dir: str, marker: str) -> None:
    from lightning_addons.callbacks import GMMFilterAuditor
    from lightning_addons.datamodules import DigitsDataModule
    from lightning_addons.modules import ImageClassifier
    from lightning_addons.modules.nn import LeNet5

    auditor = GMMFilterAuditor(max_samples=64, save_dir=save_dir)
    make_trainer(str(Path(marker).parent), [auditor, _StepMarker(marker)]).fit(
        ImageClassifier(LeNet5()), DigitsDataModule(resize=32)
    )


def faulty_series(fault: str) -> np.ndarray:
    values = np.random.default_rng(0).normal(size=(120, 3)).astype(np.float32)
    if fault == "inf":
        values[30, 1] = np.inf
    elif fault == "all_nan":
        values[:] = np.nan
    elif fault == "all_nan_channel":
        values[:, 0] = np.nan
    elif fault == "constant_channel":
        values[:, 2] = 7.0
    else:
        raise SystemExit(f"unknown series fault {fault!r}")
    return values


def series(fault: str, out: str) -> None:
    from lightning_addons.datamodules import TimeSeriesDataModule

    def dm(invalid: str) -> TimeSeriesDataModule:
        return TimeSeriesDataModule(
            faulty_series(fault), lookback=8, horizon=4, splits=[80, 20, 20], invalid=invalid
        )

    report: dict = {}
    masked = dm("mask")
    try:
        masked.setup()
        train = masked.dataset("train")
        report["mask"] = {
            "masked_channels": [[n, f, why] for n, f, why in masked.masked_channels],
            "train_windows": len(train),
            "observed_inf": int(sum(bool(torch.isinf(train[i]["x"]).any()) for i in range(len(train)))),
            "finite_scaler": bool(np.isfinite(masked.scaler.mean.numpy()).all()),
        }
    except ValueError as err:
        report["mask"] = {"error": str(err)}
    Path(out).write_text(json.dumps(report))
    dm("raise").setup()  # the error a user sees; exit 0 only if the series passed
    print("setup passed")


if __name__ == "__main__":
    torch.set_num_threads(1)
    mode, *args = sys.argv[1:]
    {"prune-resume": prune_resume, "audit-unwritable": audit_unwritable, "series": series}[mode](*args)
