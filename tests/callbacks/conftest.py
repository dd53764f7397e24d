"""Fixtures of the callbacks tests: a quiet CPU Trainer factory."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest


@pytest.fixture
def make_trainer(tmp_path):
    def make(**kwargs) -> pl.Trainer:
        opts = dict(
            accelerator="cpu",
            devices=1,
            max_epochs=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=str(tmp_path),
            num_sanity_val_steps=0,
        )
        opts.update(kwargs)
        return pl.Trainer(**opts)

    return make
