"""GMMFilterAuditor inside a Trainer: logged scalars, tables, sample ids, state, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_addons.callbacks import GMMFilterAuditor
from lightning_addons.datamodules import DigitsDataModule
from lightning_addons.modules import ImageClassifier
from lightning_addons.modules.nn import LeNet5


def lenet_module(seed: int = 0) -> ImageClassifier:
    pl.seed_everything(seed, verbose=False)
    return ImageClassifier(LeNet5(), lr=3e-3)


def test_auditor_logs_scalars_writes_tables_and_maps_sample_ids(make_trainer, tmp_path):
    dm = DigitsDataModule(resize=32, corruptions={"outliers": 0.05}, return_indices=True)
    auditor = GMMFilterAuditor(
        max_overhead=None, max_samples=200, rule="small_component", save_dir=str(tmp_path / "audit")
    )
    trainer = make_trainer(
        max_epochs=2,
        limit_train_batches=6,
        limit_val_batches=2,
        callbacks=[auditor],
        logger=CSVLogger(str(tmp_path)),
    )
    trainer.fit(lenet_module(), dm)
    assert [a["epoch"] for a in auditor.history] == [0, 1]
    m = trainer.callback_metrics
    for key in (
        "gmm/anomaly_filters",
        "gmm/dead_filters",
        "gmm/mean_ch",
        "gmm/outlier_samples",
        "gmm/audit_seconds",
        "gmm/anomaly_filters/model.features.0",
        "gmm/mean_ch/model.features.3",
    ):
        assert key in m, key
    latest = auditor.latest
    assert float(m["gmm/anomaly_filters"]) == latest["anomaly_filters"]
    assert len(latest["filters"]) == 6 + 16 and latest["n_samples"] == 200
    assert {r["k"] for r in latest["filters"] if not r["dead"]} <= {2, 3, 4}
    train = dm.dataset("train")
    subset = set(auditor.audited_indices)
    assert len(subset) == 200 and subset == set(latest["sample_ids"])
    assert set(auditor.outlier_indices) <= subset and all(
        0 <= i < len(train) for i in auditor.outlier_indices
    )
    assert set(auditor.history[0]["sample_ids"]).isdisjoint(subset)  # rotation: the next 200 samples
    assert (
        auditor.coverage == pytest.approx(400 / len(train)) and float(m["gmm/coverage"]) == auditor.coverage
    )
    saved = json.loads((tmp_path / "audit" / "audit_epoch001.json").read_text())
    assert saved["outlier_ids"] == latest["outlier_ids"]
    csv_text = (tmp_path / "audit" / "audit_epoch001.csv").read_text().splitlines()
    assert csv_text[0].startswith("epoch,layer,filter,k,ch") and len(csv_text) == 1 + 22
    frame = auditor.history_frame()
    assert len(frame) == 2 * 22 and set(frame["layer"]) == {"model.features.0", "model.features.3"}
    assert sorted(p.name for p in (tmp_path / "audit").glob("*.png")) == [
        "gmm_model_features_0.png",
        "gmm_model_features_3.png",
    ]


@pytest.mark.stochastic
def test_auditor_ids_are_dataset_positions_for_plain_xy_datasets(make_trainer, seed_offset):
    pl.seed_everything(seed_offset, verbose=False)  # the model's initial weights and the loader's shuffle
    g = torch.Generator().manual_seed(seed_offset)
    x = torch.randn(120, 1, 12, 12, generator=g)
    x[115:] += 8.0  # 5 shifted samples: positions 115..119
    y = torch.randint(0, 10, (120,), generator=g)
    loader = DataLoader(TensorDataset(x, y), batch_size=40, shuffle=True)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 10 * 10, 10))
    # the likelihood rule: this test is about index spaces; a 4-filter layer leaves the calibrated default
    # rule little power (it needs all 4 filters to agree at alpha=0.01 over 120 samples)
    auditor = GMMFilterAuditor(
        max_overhead=None,
        max_samples=120,
        min_votes=2,
        rule="likelihood",
        figures="none",
        save_tables=False,
        seed=seed_offset,
    )
    trainer = make_trainer(max_epochs=1, limit_train_batches=1, callbacks=[auditor])
    trainer.fit(ImageClassifier(model), train_dataloaders=loader)
    assert auditor.latest is not None and auditor.latest["anomaly_filters"] >= 1
    assert set(auditor.outlier_indices) == set(range(115, 120))


def test_auditor_respects_warmup_and_cadence(make_trainer):
    auditor = GMMFilterAuditor(
        max_overhead=None,
        max_samples=64,
        every_n_epochs=2,
        warmup_epochs=1,
        figures="none",
        save_tables=False,
    )
    trainer = make_trainer(max_epochs=5, limit_train_batches=1, limit_val_batches=1, callbacks=[auditor])
    trainer.fit(lenet_module(), DigitsDataModule(resize=32))
    assert [a["epoch"] for a in auditor.history] == [1, 3]


def test_auditor_state_survives_resume_and_loads_weights_only(make_trainer, tmp_path):
    dm = DigitsDataModule(resize=32, return_indices=True)
    ckpt = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), save_last=True)
    auditor = GMMFilterAuditor(max_overhead=None, max_samples=64, figures="none", save_tables=False)
    trainer = make_trainer(
        max_epochs=2,
        limit_train_batches=2,
        limit_val_batches=1,
        callbacks=[auditor, ckpt],
        enable_checkpointing=True,
    )
    trainer.fit(lenet_module(), dm)
    path = tmp_path / "ckpt" / "last.ckpt"
    raw = torch.load(path, weights_only=True)
    state = next(v for k, v in raw["callbacks"].items() if "GMMFilterAuditor" in k)
    assert [a["epoch"] for a in state["history"]] == [0, 1]
    resumed = GMMFilterAuditor(max_overhead=None, max_samples=64, figures="none", save_tables=False)
    trainer2 = make_trainer(max_epochs=3, limit_train_batches=2, limit_val_batches=1, callbacks=[resumed])
    trainer2.fit(lenet_module(1), dm, ckpt_path=str(path))
    assert [a["epoch"] for a in resumed.history] == [0, 1, 2]
    assert resumed.history[:2] == auditor.history
    seen = set(auditor.history[0]["sample_ids"]) | set(auditor.history[1]["sample_ids"])
    assert seen.isdisjoint(resumed.history[2]["sample_ids"])  # the rotation continues where it stopped
    assert resumed.coverage == pytest.approx(3 * 64 / len(dm.dataset("train")))


def test_same_seed_gives_same_anomaly_sets(make_trainer):
    def run():
        dm = DigitsDataModule(resize=32, corruptions={"outliers": 0.05})
        auditor = GMMFilterAuditor(
            max_overhead=None, max_samples=128, rule="small_component", figures="none", save_tables=False
        )
        make_trainer(max_epochs=1, limit_train_batches=4, limit_val_batches=1, callbacks=[auditor]).fit(
            lenet_module(), dm
        )
        return auditor

    a, b = run(), run()
    assert a.anomaly_sets() == b.anomaly_sets() and a.outlier_indices == b.outlier_indices
    assert [r["ch"] for r in a.latest["filters"]] == [r["ch"] for r in b.latest["filters"]]


# ---------------------------------------------------------------------------------------------- bad input
def test_no_conv_layer_is_a_clear_error(make_trainer):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    trainer = make_trainer(
        limit_train_batches=1, callbacks=[GMMFilterAuditor(max_overhead=None, max_samples=64)]
    )
    with pytest.raises(ValueError, match=r"found no nn.Conv2d.*pass `layers=\[...\]`"):
        trainer.fit(ImageClassifier(model), DigitsDataModule())


def test_unknown_layer_name_lists_the_conv_layers(make_trainer):
    trainer = make_trainer(
        limit_train_batches=1,
        callbacks=[GMMFilterAuditor(max_overhead=None, layers=["features.0"], max_samples=64)],
    )
    with pytest.raises(
        ValueError, match=r"`layers` entries \['features.0'\] match no module.*model.features.0"
    ):
        trainer.fit(lenet_module(), DigitsDataModule(resize=32))


def test_max_samples_larger_than_the_dataset_is_rejected(make_trainer):
    loader = DataLoader(
        TensorDataset(torch.randn(50, 1, 32, 32), torch.zeros(50, dtype=torch.long)), batch_size=25
    )
    trainer = make_trainer(
        limit_train_batches=1, callbacks=[GMMFilterAuditor(max_overhead=None, max_samples=64)]
    )
    with pytest.raises(
        ValueError, match=r"`max_samples`=64 is larger than the training dataset \(50 samples\)"
    ):
        trainer.fit(lenet_module(), train_dataloaders=loader)


def test_non_image_samples_are_rejected(make_trainer):
    loader = DataLoader(
        TensorDataset(torch.randn(100, 32), torch.zeros(100, dtype=torch.long)), batch_size=50
    )

    class Reshape(nn.Module):
        def forward(self, x):
            return x.view(len(x), 1, 4, 8)

    model = nn.Sequential(Reshape(), nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 2 * 6, 10))
    trainer = make_trainer(
        limit_train_batches=1, callbacks=[GMMFilterAuditor(max_overhead=None, max_samples=64)]
    )
    with pytest.raises(ValueError, match=r"needs image samples of shape \[C, H, W\].*\(32,\)"):
        trainer.fit(ImageClassifier(model), train_dataloaders=loader)


def test_non_image_layer_output_is_rejected(make_trainer):
    trainer = make_trainer(
        limit_train_batches=1,
        callbacks=[GMMFilterAuditor(max_overhead=None, layers=["model.classifier.1"], max_samples=64)],
    )
    with pytest.raises(ValueError, match=r"'model.classifier.1' outputs \(64, 120\), not \[N, C, H, W\]"):
        trainer.fit(lenet_module(), DigitsDataModule(resize=32))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"components": [1, 2]}, "`components` must be a non-empty list of integers >= 2"),
        ({"components": [2, 600]}, "below the number of audited samples"),
        ({"max_samples": 0}, "`max_samples` must be an integer >= 8"),
        ({"every_n_epochs": 0}, "`every_n_epochs` must be an integer >= 1"),
        ({"warmup_epochs": -1}, "`warmup_epochs` must be an integer >= 0"),
        ({"criterion": "aic"}, r"`criterion` must be one of \['ch', 'bic'\], got 'aic'"),
        ({"backend": "jax"}, r"`backend` must be one of \['torch', 'sklearn'\]"),
        ({"rule": "zscore"}, "`rule` must be one of"),
        (
            {"rule_kwargs": {"tau": 0.1}},
            r"`rule_kwargs` has keys \['tau'\] that rule 'consensus' does not take",
        ),
        ({"layers": []}, "`layers` must be None"),
        ({"figures": "all"}, "`figures` must be one of"),
        ({"min_votes": 0}, "`min_votes` must be an integer >= 1"),
        ({"n_jobs": 0}, r"`n_jobs` must be a positive integer or -1 \(all cores\), got 0"),
        ({"audit_device": "cuda"}, r"`audit_device` must be one of \['auto', 'cpu'\], got 'cuda'"),
        (
            {"max_overhead": 0},
            r"`max_overhead` must be a positive fraction of training time \(e.g. 0.05\) or None",
        ),
        ({"max_overhead": -0.1}, r"`max_overhead` must be a positive fraction .* got -0.1"),
        ({"max_overhead": float("nan")}, r"`max_overhead` must be a positive fraction .* got nan"),
        ({"max_overhead": "5%"}, r"`max_overhead` must be a positive fraction .* got '5%'"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GMMFilterAuditor(**kwargs)


def test_auditor_writes_a_tensorboard_table(make_trainer, tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger

    logger = TensorBoardLogger(str(tmp_path), name="tb")
    auditor = GMMFilterAuditor(max_overhead=None, max_samples=64, figures="none")
    make_trainer(limit_train_batches=1, limit_val_batches=1, callbacks=[auditor], logger=logger).fit(
        lenet_module(), DigitsDataModule(resize=32)
    )
    assert list(Path(logger.log_dir).glob("events.out.tfevents.*"))
    assert (Path(logger.log_dir) / "gmm_audit" / "audit_epoch000.json").is_file()  # tables under the log dir


class _Rank0:
    global_rank, world_size = 0, 1


def test_budget_skips_an_audit_that_would_exceed_max_overhead(monkeypatch):
    import lightning_addons.callbacks.gmm_auditor as mod

    clock = {"t": 100.0}
    monkeypatch.setattr(mod.time, "perf_counter", lambda: clock["t"])
    auditor = GMMFilterAuditor(max_overhead=0.05)
    auditor._fit_start = 100.0
    assert auditor._within_budget(_Rank0())  # the first due audit always runs
    auditor.history.append({"seconds": 1.0})
    auditor._audit_seconds = 1.0
    clock["t"] = 100.0 + 1.0 + 20.0  # 20 s of training: 1 + 1 > 0.05 * 20
    assert not auditor._within_budget(_Rank0())
    clock["t"] = 100.0 + 1.0 + 40.0  # 40 s of training: 1 + 1 <= 0.05 * 40
    assert auditor._within_budget(_Rank0())
    assert auditor.overhead() == pytest.approx(1.0 / 40.0)
    assert GMMFilterAuditor(max_overhead=None)._within_budget(_Rank0())


def test_tight_budget_audits_once_and_lists_the_skipped_epochs(make_trainer):
    auditor = GMMFilterAuditor(max_overhead=1e-9, max_samples=64, figures="none", save_tables=False)
    make_trainer(max_epochs=3, limit_train_batches=1, limit_val_batches=1, callbacks=[auditor]).fit(
        lenet_module(), DigitsDataModule(resize=32)
    )
    assert [a["epoch"] for a in auditor.history] == [0]
    assert auditor.skipped_epochs == [1, 2]
    assert auditor.history[0]["overhead"] > 1e-9
    unbounded = GMMFilterAuditor(max_overhead=None, max_samples=64, figures="none", save_tables=False)
    make_trainer(max_epochs=3, limit_train_batches=1, limit_val_batches=1, callbacks=[unbounded]).fit(
        lenet_module(), DigitsDataModule(resize=32)
    )
    assert [a["epoch"] for a in unbounded.history] == [0, 1, 2] and unbounded.skipped_epochs == []


def test_budget_accounting_survives_resume(make_trainer, tmp_path):
    dm = DigitsDataModule(resize=32)
    ckpt = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), save_last=True)
    auditor = GMMFilterAuditor(max_overhead=1e-9, max_samples=64, figures="none", save_tables=False)
    make_trainer(
        max_epochs=2,
        limit_train_batches=1,
        limit_val_batches=1,
        callbacks=[auditor, ckpt],
        enable_checkpointing=True,
    ).fit(lenet_module(), dm)
    raw = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    state = next(v for k, v in raw["callbacks"].items() if "GMMFilterAuditor" in k)
    assert (
        state["skipped_epochs"] == [1]
        and state["audit_seconds"] > 0
        and state["fit_seconds"] > state["audit_seconds"]
    )
    resumed = GMMFilterAuditor(max_overhead=1e-9, max_samples=64, figures="none", save_tables=False)
    make_trainer(max_epochs=3, limit_train_batches=1, limit_val_batches=1, callbacks=[resumed]).fit(
        lenet_module(1), dm, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt")
    )
    assert [a["epoch"] for a in resumed.history] == [0]  # the restored budget still holds: epoch 2 skipped
    assert resumed.skipped_epochs == [1, 2]
    assert resumed._audit_seconds == pytest.approx(state["audit_seconds"])


def test_an_audit_is_announced_when_it_starts_if_the_last_one_was_long(make_trainer, caplog):
    import logging

    def started_lines(threshold: float) -> list[str]:
        auditor = GMMFilterAuditor(max_overhead=None, max_samples=64, figures="none", save_tables=False)
        auditor.announce_after_seconds = threshold
        trainer = make_trainer(max_epochs=3, limit_train_batches=1, limit_val_batches=1, callbacks=[auditor])
        caplog.clear()
        with caplog.at_level(logging.INFO):
            trainer.fit(lenet_module(), DigitsDataModule(resize=32))
        return [r.getMessage() for r in caplog.records if "started on" in r.getMessage()]

    assert started_lines(1e9) == ["GMM audit epoch 0 (scheduled): started on 64 samples"]  # the first only
    lines = started_lines(0.0)  # every audit counts as long
    assert len(lines) == 3
    assert lines[1].startswith("GMM audit epoch 1 (scheduled): started on 64 samples (the last audit took ")
