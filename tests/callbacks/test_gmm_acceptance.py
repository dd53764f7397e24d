"""Acceptance on digits (default rule, LeNet-5 audited after 5 epochs): 5% and 8% injected inverted, relabelled
digits are flagged with precision >= 0.8 and recall >= 0.8 within the audited subset on 3 of 3 seeds; clean
digits flag at most 1% of the audited samples.

The default rule's parameters (consensus: z > 12, bulk components >= 10%, at least 20% of a layer's live filters,
alpha 0.01) were chosen by looking at seed-0 runs of LeNet-5, AlexNetSmall and torchvision models (see
docs/gmm.md): this test guards the behaviour on other seeds too, but it is not an unbiased estimate."""

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
    dm = DigitsDataModule(
        resize=32, corruptions={"outliers": outliers} if outliers else None, return_indices=True, seed=seed
    )
    auditor = GMMFilterAuditor(
        max_overhead=None,
        max_samples=512,
        warmup_epochs=AUDIT_EPOCH,
        seed=seed,
        figures="none",
        save_tables=False,
    )
    trainer = make_trainer(max_epochs=AUDIT_EPOCH + 1, limit_val_batches=1, callbacks=[auditor])
    trainer.fit(ImageClassifier(LeNet5(), lr=3e-3), dm)
    assert [a["epoch"] for a in auditor.history] == [AUDIT_EPOCH]
    return auditor, dm.dataset("train")


@pytest.mark.slow
@pytest.mark.stochastic
@pytest.mark.parametrize("fraction", [0.05, 0.08])
def test_injected_outliers_are_flagged_with_precision_and_recall_on_every_seed(
    make_trainer, seed_offset, fraction
):
    scores = []
    for seed in range(seed_offset, seed_offset + 3):
        auditor, train = audit_run(seed, fraction, make_trainer)
        audited = torch.tensor(auditor.audited_indices)
        truth = set(audited[train.is_outlier[audited]].tolist())
        flagged = set(auditor.outlier_indices)
        scores.append((len(flagged & truth) / max(1, len(flagged)), len(flagged & truth) / len(truth)))
    assert all(p >= 0.8 and r >= 0.8 for p, r in scores), scores


@pytest.mark.slow
@pytest.mark.stochastic
def test_clean_digits_flag_at_most_one_percent_on_every_seed(make_trainer, seed_offset):
    flagged = [
        audit_run(seed, 0.0, make_trainer)[0].latest["outlier_samples"]
        for seed in range(seed_offset, seed_offset + 3)
    ]
    assert all(f <= 0.01 * 512 for f in flagged), flagged


def test_outlier_ids_index_the_training_dataset():
    """The flagged ids are positions in dm.dataset('train'), where `is_outlier` can be read off."""
    ds = DigitsDataModule(resize=32, corruptions={"outliers": 0.05}, return_indices=True).dataset("train")
    assert ds[5][2] == 5 and torch.equal(
        ds[int(ds.is_outlier.nonzero()[0])][0], ds.x[int(ds.is_outlier.nonzero()[0])]
    )
