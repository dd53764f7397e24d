"""EnergyMeter on a CUDA device reads NVML's energy counter (skipped without a GPU)."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from lightning_addons.callbacks import EnergyMeter
from lightning_addons.datamodules import DigitsDataModule
from lightning_addons.energy import NVMLMeter, best_meter
from lightning_addons.modules import ImageClassifier
from lightning_addons.modules.nn import AlexNetSmall

pytestmark = pytest.mark.gpu


def test_nvml_meter_counts_the_energy_of_gpu_work():
    meter = NVMLMeter()
    meter.start()
    a = torch.randn(4096, 4096, device="cuda")
    for _ in range(200):
        a = torch.tanh(a @ a.T / 4096)
    torch.cuda.synchronize()
    joules = meter.read()
    assert joules > 0, "NVML's total-energy counter did not advance during GPU work"
    assert best_meter().source == "nvml"


def test_energy_meter_uses_nvml_in_a_gpu_trainer():
    meter = EnergyMeter()
    trainer = pl.Trainer(
        accelerator="gpu",
        devices=1,
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[meter],
    )
    trainer.fit(ImageClassifier(AlexNetSmall()), DigitsDataModule(resize=32))
    assert meter.source == "nvml"
    assert meter.energy_joules > 0 and meter.fit_seconds > 0
    # an H100 idles at tens of watts and peaks near 700 W: the mean power must lie in a physical range
    assert 5.0 < meter.energy_joules / meter.fit_seconds < 1000.0
