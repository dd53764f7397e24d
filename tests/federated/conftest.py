"""Fixtures of the federated tests: a small digits world (LeNet-5 on 32x32 digits)."""

from __future__ import annotations

import pytest
import torch

from lightning_addons.datamodules import DigitsDataModule
from lightning_addons.modules import ImageClassifier
from lightning_addons.modules.nn import LeNet5


@pytest.fixture
def make_module():
    def make(seed: int = 0, lr: float = 3e-3, optimizer: str = "adam") -> ImageClassifier:
        torch.manual_seed(seed)
        return ImageClassifier(LeNet5(width=0.5), lr=lr, optimizer=optimizer)

    return make


@pytest.fixture
def digits():
    return DigitsDataModule(resize=32, batch_size=64)
