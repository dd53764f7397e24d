"""Acceptance on digits (default rule): 5% injected inverted digits are flagged with recall >= 0.5 and precision
>= 3x the base rate in at least 2 of 3 seeds; clean digits give no anomaly filters in at least 2 of 3 seeds.

The default rule thresholds (likelihood: z > 8 on more than 2% of the samples, bulk components >= 5%) were
chosen by looking at these seeds (see docs/gmm.md): this test guards the behaviour, it is not an unbiased
estimate of it."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from lightning_addons.callbacks import GMMFilterAuditor
from lightning_addons.datamodules import DigitsDataModule
from lightning_addons.modules import ImageClassifier
from lightning_addons.modules.nn import LeNet5

AUDIT_EPOCH = 5


def audit_run(seed: int, outliers: float, make_trainer):
    pl.seed_everything(seed, verbose=False)
    dm = DigitsDataModule(resize=32, corruptions={"outliers": outliers} if outliers else None,
                          return_indices=True, seed=seed)
    auditor = GMMFilterAuditor(max_overhead=None, max_samples=512, warmup_epochs=AUDIT_EPOCH, seed=seed, figures="none",
                               save_tables=False)
    trainer = make_trainer(max_epochs=AUDIT_EPOCH + 1, limit_val_batches=1, callbacks=[auditor])
    trainer.fit(ImageClassifier(LeNet5(), lr=3e-3), dm)
    assert [a["epoch"] for a in auditor.history] == [AUDIT_EPOCH]
    return auditor, dm.dataset("train")


@pytest.mark.slow
@pytest.mark.stochastic
def test_injected_outliers_are_flagged_in_two_of_three_seeds(make_trainer, seed_offset):
    passed = []
    for seed in range(seed_offset, seed_offset + 3):
        auditor, train = audit_run(seed, 0.05, make_trainer)
        subset = auditor._subset
        truth = set(subset[train.is_outlier[subset]].tolist())
        flagged = set(auditor.outlier_indices)
        recall = len(flagged & truth) / len(truth)
        precision = len(flagged & truth) / max(1, len(flagged))
        base = len(truth) / len(subset)
        passed.append(recall >= 0.5 and precision >= 3 * base)
    assert sum(passed) >= 2, passed


@pytest.mark.slow
@pytest.mark.stochastic
def test_clean_digits_give_no_anomaly_filters_in_two_of_three_seeds(make_trainer, seed_offset):
    seeds = range(seed_offset, seed_offset + 3)
    clean = [audit_run(seed, 0.0, make_trainer)[0].latest["anomaly_filters"] == 0 for seed in seeds]
    assert sum(clean) >= 2, clean


def test_outlier_ids_index_the_training_dataset():
    """The flagged ids are positions in dm.dataset('train'), where `is_outlier` can be read off."""
    ds = DigitsDataModule(resize=32, corruptions={"outliers": 0.05}, return_indices=True).dataset("train")
    assert ds[5][2] == 5 and torch.equal(ds[int(ds.is_outlier.nonzero()[0])][0], ds.x[int(ds.is_outlier.nonzero()[0])])
