"""The classifier trains under 2-process CPU DDP and both ranks end with identical weights."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from lightning_addons.datamodules import DigitsDataModule
from lightning_addons.modules import ImageClassifier
from lightning_addons.modules.nn import LeNet5


class _SaveWeightsPerRank(pl.Callback):
    def __init__(self, folder):
        self.folder = folder

    def on_train_end(self, trainer, pl_module):
        torch.save(pl_module.state_dict(), self.folder / f"rank{trainer.global_rank}.pt")


@pytest.mark.ddp
def test_two_process_cpu_ddp_trains_with_identical_weights(tmp_path):
    pl.seed_everything(0)
    module = ImageClassifier(LeNet5(width=0.5), lr=3e-3)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[_SaveWeightsPerRank(tmp_path)],
    )
    before = {k: v.clone() for k, v in module.state_dict().items()}
    trainer.fit(module, datamodule=DigitsDataModule(resize=32, batch_size=64))
    w0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert w0.keys() == w1.keys()
    for key in w0:
        assert torch.equal(w0[key], w1[key]), key
    assert any(not torch.equal(w0[k], before[k]) for k in before)  # it did train
