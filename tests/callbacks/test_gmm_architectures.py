"""GMMFilterAuditor on real torchvision architectures and awkward inputs: unauditable layers are skipped with
one warning, layers chosen by pattern or type, bad layer selections are clear errors, ids go through Subset
chains, the audited subset rotates, skipped audits are reported, the output folder is checked in setup."""

from __future__ import annotations

import logging
import warnings

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset, TensorDataset

from lightning_addons.callbacks import AnomalyFilterPruning, GMMFilterAuditor
from lightning_addons.datamodules import DigitsDataModule
from lightning_addons.gmm import audit_layers
from lightning_addons.modules import ImageClassifier
from lightning_addons.modules.nn import LeNet5

torchvision = pytest.importorskip("torchvision")


def quiet(**kw) -> GMMFilterAuditor:
    return GMMFilterAuditor(max_overhead=None, figures="none", save_tables=False, **kw)


# ---------------------------------------------------------------------------------------------- pure core
def test_one_by_one_maps_and_rank_one_panels_are_skipped_never_anomalies():
    g = torch.Generator().manual_seed(0)
    flat = torch.randn(64, 3, 1, 1, generator=g)
    flat[:5] += 50.0  # far out, but a 1x1 map has no second principal component
    spatial = torch.randn(64, 4, 3, 3, generator=g)
    spatial[:, 1] = torch.randn(64, 1, 1, generator=g) * torch.ones(
        3, 3
    )  # rank-1 panel: one number per sample
    res = audit_layers({"flat": flat, "spatial": spatial})
    assert res["flat"].skipped.startswith("1x1 maps") and not res["flat"].anomaly.any()
    assert res["flat"].degenerate.all() and (res["flat"].k == 0).all()
    assert res["spatial"].skipped is None and res["spatial"].degenerate.tolist() == [
        False,
        True,
        False,
        False,
    ]
    assert not bool(res["spatial"].anomaly[1]) and int(res["spatial"].k[1]) == 0


# ---------------------------------------------------------------------------------------------- torchvision
def _fit_rgb(model: nn.Module, auditor: GMMFilterAuditor, make_trainer, seed: int, **data) -> None:
    pl.seed_everything(seed, verbose=False)
    dm = DigitsDataModule(resize=32, channels=3, return_indices=True, seed=seed, **data)
    make_trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=0, callbacks=[auditor]).fit(
        ImageClassifier(model, lr=1e-4), dm
    )


def _clean_rgb(n: int, seed: int) -> torch.Tensor:
    train = DigitsDataModule(resize=32, channels=3, seed=seed).dataset("train")
    return train.x[torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n]]


@pytest.mark.stochastic
@pytest.mark.parametrize(
    "arch",
    [
        "resnet18",
        pytest.param("vgg11_bn", marks=pytest.mark.slow),
        pytest.param("mobilenet_v2", marks=pytest.mark.slow),
    ],
)
def test_random_init_torchvision_models_flag_at_most_one_percent_of_clean_digits(seed_offset, arch):
    """The real torchvision classes at random init (small N to stay fast; full size: benchmarks/gmm_audit.py)."""
    torch.manual_seed(seed_offset)
    model = getattr(torchvision.models, arch)(num_classes=10)
    auditor = quiet(max_samples=96, seed=seed_offset)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = auditor.audit_module(model, _clean_rgb(96, seed_offset))
    assert r["outlier_samples"] <= 1 and r["anomaly_filters"] <= 0.01 * len(r["filters"])
    skip_warnings = [w for w in caught if "cannot be audited" in str(w.message)]
    if arch == "resnet18":  # layer4 is 1x1 at 32x32 input: skipped, listed once, never anomalies
        assert sorted(r["skipped_layers"]) == sorted(n for n in r["layers"] if n.startswith("layer4"))
        assert len(skip_warnings) == 1 and "layer4.0.conv1: 1x1 maps" in str(skip_warnings[0].message)
        assert not any(row["anomaly"] for row in r["filters"] if row["layer"].startswith("layer4"))
    elif arch == "vgg11_bn":  # 2x2 maps at the end: every layer auditable
        assert r["skipped_layers"] == {} and not skip_warnings


def test_block_outputs_are_audited_by_type_or_pattern(make_trainer):
    auditor = quiet(max_samples=64, layers=["type:BasicBlock"], ignored_layers=["model.layer4.*"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        _fit_rgb(torchvision.models.resnet18(num_classes=10), auditor, make_trainer, 0)
    assert list(auditor.latest["layers"]) == [f"model.layer{i}.{j}" for i in (1, 2, 3) for j in (0, 1)]
    by_glob = quiet(layers=["model.layer?.0.conv*"]).resolve_layers(
        ImageClassifier(torchvision.models.resnet18(num_classes=10))
    )
    assert by_glob == [f"model.layer{i}.0.conv{j}" for i in (1, 2, 3, 4) for j in (1, 2)]


# ---------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"layers": ["model.nope"]}, r"`layers` entries \['model.nope'\] match no module"),
        ({"layers": ["type:Conv3d"]}, r"`layers` entries \['type:Conv3d'\] match no module"),
        (
            {"ignored_layers": ["model.features.9"]},
            r"`ignored_layers` entries \['model.features.9'\] match no module",
        ),
        ({"ignored_layers": ["type:Conv2d"]}, r"`ignored_layers` removes every audited layer"),
    ],
)
def test_layer_selections_that_match_nothing_are_rejected_at_setup(make_trainer, kwargs, match):
    trainer = make_trainer(limit_train_batches=1, callbacks=[quiet(max_samples=64, **kwargs)])
    with pytest.raises(ValueError, match=match):
        trainer.fit(ImageClassifier(LeNet5()), DigitsDataModule(resize=32))


def test_a_module_type_without_feature_maps_is_a_clear_error(make_trainer):
    trainer = make_trainer(limit_train_batches=1, callbacks=[quiet(max_samples=64, layers=["type:Linear"])])
    with pytest.raises(
        ValueError, match=r"`layers` entry 'model.classifier.\d' outputs \(64, \d+\), not \[N, C, H, W\]"
    ):
        trainer.fit(ImageClassifier(LeNet5()), DigitsDataModule(resize=32))


def test_a_module_off_the_forward_path_is_a_clear_error(make_trainer):
    model = LeNet5()
    model.unused = nn.Conv2d(1, 2, 3)
    trainer = make_trainer(limit_train_batches=1, callbacks=[quiet(max_samples=64, layers=["model.unused"])])
    with pytest.raises(ValueError, match=r"`layers` entries \['model.unused'\] produced no output"):
        trainer.fit(ImageClassifier(model), DigitsDataModule(resize=32))


def test_an_unwritable_save_dir_fails_in_setup_before_training(make_trainer, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    module = ImageClassifier(LeNet5())
    trainer = make_trainer(
        limit_train_batches=1, callbacks=[GMMFilterAuditor(max_samples=64, save_dir=str(blocker / "out"))]
    )
    with pytest.raises(ValueError, match=r"cannot write to `save_dir` .*a_file/out.*save_tables=False"):
        trainer.fit(module, DigitsDataModule(resize=32))
    assert trainer.global_step == 0


def test_default_output_folder_is_under_default_root_dir(make_trainer, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "root"
    auditor = GMMFilterAuditor(max_overhead=None, max_samples=64, figures="end")
    make_trainer(
        limit_train_batches=1, limit_val_batches=1, callbacks=[auditor], default_root_dir=str(root)
    ).fit(ImageClassifier(LeNet5()), DigitsDataModule(resize=32))
    assert (root / "gmm_audit" / "audit_epoch000.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]  # nothing in the working directory


# ---------------------------------------------------------------------------------------------- index spaces
def test_outlier_ids_are_indices_of_the_dataset_under_a_subset_chain(make_trainer):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 1, 12, 12, generator=g)
    shifted = torch.tensor([7, 50, 123, 260, 333, 390])
    x[shifted] *= 30.0
    base = TensorDataset(x, torch.randint(0, 10, (400,), generator=g))
    outer = Subset(
        Subset(base, torch.randperm(400, generator=g).tolist()),
        list(range(0, 400, 2)) + list(range(1, 400, 2)),
    )
    loader = DataLoader(outer, batch_size=100)
    pl.seed_everything(0, verbose=False)
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 10 * 10, 10))
    auditor = quiet(max_samples=None)
    make_trainer(max_epochs=1, limit_train_batches=1, callbacks=[auditor]).fit(
        ImageClassifier(model), train_dataloaders=loader
    )
    assert sorted(auditor.audited_indices) == list(range(400))
    assert sorted(auditor.outlier_indices) == shifted.tolist()


def test_rotating_subset_covers_the_training_set(make_trainer):
    dm = DigitsDataModule(resize=32, return_indices=True)
    auditor = quiet(max_samples=512)
    make_trainer(max_epochs=3, limit_train_batches=1, limit_val_batches=1, callbacks=[auditor]).fit(
        ImageClassifier(LeNet5()), dm
    )
    n = len(dm.dataset("train"))
    seen = [set(a["sample_ids"]) for a in auditor.history]
    assert seen[0].isdisjoint(seen[1]) and set().union(*seen) == set(range(n))  # 3 x 512 >= n
    assert [a["coverage"] for a in auditor.history] == pytest.approx([512 / n, 1024 / n, 1.0])
    fixed = quiet(max_samples=64, subset="fixed")
    make_trainer(max_epochs=2, limit_train_batches=1, limit_val_batches=1, callbacks=[fixed]).fit(
        ImageClassifier(LeNet5()), dm
    )
    assert fixed.history[0]["sample_ids"] == fixed.history[1]["sample_ids"]


# ---------------------------------------------------------------------------------------------- schedule
def test_a_skipped_audit_is_reported_in_the_end_of_fit_summary(make_trainer, caplog):
    auditor = GMMFilterAuditor(max_overhead=1e-9, max_samples=64, figures="none", save_tables=False)
    with caplog.at_level(logging.INFO):
        make_trainer(max_epochs=3, limit_train_batches=1, limit_val_batches=1, callbacks=[auditor]).fit(
            ImageClassifier(LeNet5()), DigitsDataModule(resize=32)
        )
    summary = auditor.summary()
    assert summary["audited_epochs"] == [0] and [s["epoch"] for s in summary["skipped"]] == [1, 2]
    assert all("max_overhead=1e-09" in s["reason"] for s in summary["skipped"])
    text = caplog.text
    assert (
        "GMMFilterAuditor summary: 1 audit(s) at epochs [0]" in text
        and "2 skipped: epoch 1 (max_overhead" in text
    )


def test_budget_shrinks_an_audit_before_skipping_it(monkeypatch):
    import lightning_addons.callbacks.gmm_auditor as mod

    clock = {"t": 100.0}
    monkeypatch.setattr(mod.time, "perf_counter", lambda: clock["t"])
    auditor = GMMFilterAuditor(max_overhead=0.05, max_samples=512)
    auditor._fit_start = 100.0
    auditor.history.append({"seconds": 1.0, "n_samples": 512})
    auditor._audit_seconds = 1.0
    clock["t"] = 100.0 + 1.0 + 30.0  # budget 0.05 * 30 - 1 = 0.5 s: 256 samples at 1/512 s each

    class Rank0:
        global_rank, world_size = 0, 1

    assert auditor._planned_size(Rank0()) == 256
    clock["t"] = 100.0 + 1.0 + 21.0  # 0.05 s left: 25 samples, below the floor of 64
    assert auditor._planned_size(Rank0()) == 0


def test_pruning_epoch_runs_an_audit_when_the_last_one_is_stale(make_trainer):
    auditor = GMMFilterAuditor(
        max_overhead=None, max_samples=64, warmup_epochs=5, figures="none", save_tables=False
    )
    pruning = AnomalyFilterPruning(auditor, criterion="low_ch", amount=1, epochs=2)
    make_trainer(max_epochs=3, limit_train_batches=1, limit_val_batches=1, callbacks=[auditor, pruning]).fit(
        ImageClassifier(LeNet5()), DigitsDataModule(resize=32)
    )
    assert [(a["epoch"], a["reason"]) for a in auditor.history] == [(2, "pruning")]
    assert {k: len(v) for k, v in pruning.pruned_filters.items()} == {
        "model.features.0": 1,
        "model.features.3": 1,
    }
