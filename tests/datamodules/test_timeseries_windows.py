"""TimeSeriesDataModule: windows, chronological splits, train-only scaling, masked missing values, loaders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_addons.datamodules import (
    ChickenpoxDataModule,
    ETTh1DataModule,
    StocksDemoDataModule,
    TimeSeriesDataModule,
)
from lightning_addons.datamodules.timeseries import load_chickenpox, load_etth1


def test_windows_follow_the_series_and_splits_are_chronological():
    values = np.arange(100, dtype=np.float32)
    dm = TimeSeriesDataModule(values, lookback=10, horizon=5, splits=[60, 20, 20], scale=False, batch_size=4)
    dm.setup()
    train, val, test = (dm.dataset(s) for s in ("train", "val", "test"))
    assert len(train) == 60 - 15 + 1
    first = train[0]
    assert first["x"].flatten().tolist() == list(range(10)) and first["y"].flatten().tolist() == list(
        range(10, 15)
    )
    # the first validation target is the first validation row; the last test target is row 99
    assert val[0]["y"].flatten()[0].item() == 60 and val[0]["x"].flatten()[-1].item() == 59
    assert test[len(test) - 1]["y"].flatten()[-1].item() == 99
    assert (
        max(float(train[i]["y"].max()) for i in range(len(train))) == 59
    )  # no val/test row in training targets


def test_scaling_uses_training_rows_only():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(5, 2, 300), rng.normal(50, 10, 100)]).astype(np.float32)
    dm = TimeSeriesDataModule(values, lookback=8, horizon=2, splits=[300, 50, 50])
    dm.setup()
    assert dm.scaler.mean.item() == pytest.approx(values[:300].mean(), rel=1e-5)
    assert dm.scaler.std.item() == pytest.approx(values[:300].std(), rel=1e-5)
    x = dm.dataset("train")[0]["x"]
    torch.testing.assert_close(dm.scaler.inverse_transform(x).flatten(), torch.as_tensor(values[:8]))


def test_missing_values_are_filled_and_masked():
    values = np.arange(60, dtype=np.float32).reshape(30, 2)
    values[12, 1] = np.nan
    dm = TimeSeriesDataModule(values, lookback=10, horizon=4, splits=[20, 5, 5])
    dm.setup()
    item = dm.dataset("train")[0]  # y covers rows 10..13
    assert not torch.isnan(item["y"]).any() and not torch.isnan(item["x"]).any()
    assert item["mask"][2, 1, 0].item() is False and item["mask"].sum().item() == 4 * 2 - 1
    assert item["y"][2, 1, 0].item() == 0.0
    later = dm.dataset("train")[5]  # x covers rows 5..14
    assert later["x_mask"][7, 1, 0].item() is False


def test_etth1_standard_protocol(shared_data):
    dm = ETTh1DataModule(path=str(shared_data / "ETTh1.csv"), lookback=96, horizon=96)
    dm.setup()
    assert dm.borders == {"train": (0, 8640), "val": (8544, 11520), "test": (11424, 14400)}
    assert [len(dm.dataset(s)) for s in ("train", "val", "test")] == [8449, 2785, 2785]
    batch = next(iter(dm.test_dataloader()))
    assert (
        batch["x"].shape == (32, 96, 7, 1)
        and batch["y"].shape == (32, 96, 7, 1)
        and batch["u"].shape == (32, 96, 2)
    )
    raw = load_etth1(shared_data / "ETTh1.csv")
    expected = (raw["OT"].iloc[:8640].mean(), raw["OT"].iloc[:8640].std(ddof=0))
    assert (dm.scaler.mean[6, 0].item(), dm.scaler.std[6, 0].item()) == pytest.approx(expected, rel=1e-4)
    assert dm.dataset("train")[0]["u"][:3, 0].tolist() == pytest.approx([0.0, 1 / 24, 2 / 24])
    for horizon in (192, 336, 720):
        dm = ETTh1DataModule(path=str(shared_data), horizon=horizon)
        dm.setup()
        assert len(dm.dataset("test")) == 2880 - horizon + 1


def test_chickenpox_graph_loader(shared_data):
    values, edge_index, names = load_chickenpox(shared_data / "chickenpox.json")
    assert values.shape == (521, 20) and edge_index.shape == (2, 102) and len(names) == 20
    dm = ChickenpoxDataModule(path=str(shared_data / "chickenpox.json"), lookback=8, horizon=4)
    dm.setup()
    assert dm.num_nodes == 20 and dm.edge_index.shape == (2, 102)
    assert dm.dataset("train")[0]["x"].shape == (8, 20, 1)


def test_loaders_read_the_cache_without_network(shared_data, monkeypatch, tmp_path):
    import shutil
    import urllib.request

    def no_network(*args, **kwargs):
        raise AssertionError("must not download")

    monkeypatch.setenv("LIGHTNING_ADDONS_CACHE", str(tmp_path))
    (tmp_path / "datasets").mkdir()
    shutil.copy(shared_data / "chickenpox.json", tmp_path / "datasets" / "chickenpox.json")
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    assert load_chickenpox()[0].shape == (521, 20)
    with pytest.raises(FileNotFoundError, match="local_path=.*does not exist"):
        load_etth1(tmp_path / "missing.csv")


def test_embedded_stocks_demo_has_masked_gaps():
    dm = StocksDemoDataModule(lookback=24, horizon=6)
    dm.setup()
    masks = torch.stack([dm.dataset("train")[i]["mask"] for i in range(len(dm.dataset("train")))])
    assert 0.0 < masks.float().mean().item() < 1.0


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="`horizon` must be a positive integer, got 0"):
        TimeSeriesDataModule(np.zeros(50), lookback=4, horizon=0)
    with pytest.raises(ValueError, match="`lookback` must be a positive integer, got -2"):
        TimeSeriesDataModule(np.zeros(50), lookback=-2, horizon=1)
    with pytest.raises(ValueError, match="`splits` must be three"):
        TimeSeriesDataModule(np.zeros(50), splits=[0.5, 0.5])
    with pytest.raises(ValueError, match="must sum to at most 1"):
        TimeSeriesDataModule(np.zeros(50), splits=[0.7, 0.3, 0.2])
    with pytest.raises(ValueError, match=r"`values` must be \[T\], \[T, N\] or \[T, N, F\].*rank 4"):
        TimeSeriesDataModule(np.zeros((5, 2, 2, 2)))
    with pytest.raises(ValueError, match="training split has 20 rows, fewer than lookback \\+ horizon = 30"):
        TimeSeriesDataModule(np.zeros(50), lookback=20, horizon=10, splits=[20, 15, 15]).setup()
    with pytest.raises(ValueError, match=r"`features` must be one of \['M', 'S'\], got 'X'"):
        ETTh1DataModule(features="X")
