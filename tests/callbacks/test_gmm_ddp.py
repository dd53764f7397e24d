"""2-process CPU DDP (ddp_spawn, gloo) on digits: every rank ends with the same verdicts and masks."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from lightning_addons.callbacks import AnomalyFilterPruning, GMMFilterAuditor
from lightning_addons.datamodules import DigitsDataModule
from lightning_addons.modules import ImageClassifier
from lightning_addons.modules.nn import LeNet5


class DumpPerRank(pl.Callback):
    """Each rank saves what it holds at the end of fit, for comparison in the test process."""

    def __init__(self, folder: str, auditor: GMMFilterAuditor, pruning: AnomalyFilterPruning) -> None:
        self.folder, self.auditor, self.pruning = folder, auditor, pruning

    def on_fit_end(self, trainer, pl_module):
        conv = pl_module.model.features[0]
        torch.save(
            {
                "masks": self.pruning.state_dict()["masks"],
                "history": self.auditor.history,
                "weight": conv.weight.detach().cpu().clone(),
            },
            f"{self.folder}/rank{trainer.global_rank}.pt",
        )


@pytest.mark.ddp
def test_ddp_ranks_share_verdicts_and_masks(tmp_path):
    pl.seed_everything(0, verbose=False)
    auditor = GMMFilterAuditor(
        max_overhead=None, max_samples=128, rule="small_component", figures="none", save_tables=False
    )
    pruning = AnomalyFilterPruning(auditor, criterion="low_ch", amount=2, epochs=1)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        max_epochs=2,
        limit_train_batches=3,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        callbacks=[auditor, pruning, DumpPerRank(str(tmp_path), auditor, pruning)],
    )
    trainer.fit(
        ImageClassifier(LeNet5(), lr=3e-3), DigitsDataModule(resize=32, corruptions={"outliers": 0.05})
    )
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["history"] == r1["history"] and len(r0["history"]) == 2
    assert r0["history"][0]["n_samples"] == 128  # the gathered subset, not one rank's shard
    assert set(r0["masks"]) == {"model.features.0", "model.features.3"}
    for name in r0["masks"]:
        assert torch.equal(r0["masks"][name], r1["masks"][name]) and int((~r0["masks"][name]).sum()) == 2
    assert torch.equal(r0["weight"], r1["weight"])


class FrozenClassifier(ImageClassifier):
    """Learning rate 0: the weights stay at their seeded initial values, so a 1-process and a 2-process fit
    audit the same model (LeNet-5 has no batch norm whose running statistics would drift)."""

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _frozen_fit(root, **trainer_kwargs) -> GMMFilterAuditor:
    pl.seed_everything(0, verbose=False)
    # batch_size 16 divides each rank's 32-sample shard: both runs forward the same batches
    auditor = GMMFilterAuditor(max_overhead=None, max_samples=64, batch_size=16, figures="none")
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=2,
        limit_train_batches=1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(root),
        callbacks=[auditor],
        **trainer_kwargs,
    )
    trainer.fit(
        FrozenClassifier(LeNet5()),
        DigitsDataModule(resize=32, corruptions={"outliers": 0.05}, return_indices=True),
    )
    return auditor


def _without_timing(history):
    return [{k: v for k, v in audit.items() if k not in ("seconds", "overhead")} for audit in history]


@pytest.mark.ddp
def test_ddp_spawn_returns_history_and_outliers_to_the_launching_process(tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    single = _frozen_fit(tmp_path / "one", devices=1)
    spawned = _frozen_fit(tmp_path / "two", devices=2, strategy="ddp_spawn")
    assert len(single.history) == 2 and single.outlier_indices  # two audits that flag something
    assert _without_timing(spawned.history) == _without_timing(single.history)
    assert spawned.outlier_indices == single.outlier_indices
    assert spawned.audited_indices == single.audited_indices
    assert spawned.skipped == [] and spawned.summary()["audits"] == 2
    assert spawned.coverage == single.coverage > 0
    # tables under the Trainer's directory (logger=False: default_root_dir), nothing in the current directory
    assert list(cwd.iterdir()) == []
    for root in ("one", "two"):
        written = sorted(p.relative_to(tmp_path / root).as_posix() for p in (tmp_path / root).rglob("*"))
        assert written == [
            "gmm_audit",
            "gmm_audit/audit_epoch000.csv",
            "gmm_audit/audit_epoch000.json",
            "gmm_audit/audit_epoch001.csv",
            "gmm_audit/audit_epoch001.json",
        ]
