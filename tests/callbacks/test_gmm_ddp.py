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
