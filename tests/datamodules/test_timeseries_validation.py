"""Series validation, time encodings from timestamps, history for long seasons."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lightning_addons.datamodules import TimeSeriesDataModule
from lightning_addons.datamodules.timeseries import check_steps_per_day, infer_steps_per_day


def _series(rows=120, nodes=3, seed=0):
    return np.random.default_rng(seed).normal(size=(rows, nodes)).astype(np.float32)


def _dm(values, **kw):
    kw.setdefault("lookback", 8)
    kw.setdefault("horizon", 4)
    kw.setdefault("splits", [80, 20, 20])
    return TimeSeriesDataModule(values, **kw)


def test_inf_values_are_an_error_naming_the_row_and_channel_or_masked_never_observed():
    values = _series()
    values[30, 1] = np.inf
    with pytest.raises(
        ValueError, match=r"`values` contains 1 inf value\(s\), the first at row 30, channel \(node 1"
    ):
        _dm(values).setup()
    dm = _dm(values, invalid="mask")
    dm.setup()
    ds = dm.dataset("train")
    item = ds[25]  # x covers rows 25..32
    assert not bool(item["x_mask"][5, 1, 0]) and item["x_mask"].sum() == 8 * 3 - 1
    assert np.isfinite(dm.scaler.mean.numpy()).all() and np.isfinite(dm.scaler.std.numpy()).all()
    assert float(item["x"][5, 1, 0]) == 0.0


def test_channels_dead_or_constant_in_training_are_errors_or_masked_everywhere():
    values = _series()
    values[:100, 0] = np.nan  # never observed in the 80 training rows
    values[:, 2] = 7.0  # constant
    with pytest.raises(
        ValueError,
        match=r"\(node 0, feature 0\) is never observed in the training rows, "
        r"\(node 2, feature 0\) is constant in the training rows",
    ):
        _dm(values).setup()
    dm = _dm(values, invalid="mask")
    dm.setup()
    assert [(n, why) for n, _, why in dm.masked_channels] == [
        (0, "never observed in the training rows"),
        (2, "constant in the training rows"),
    ]
    test = dm.dataset("test")
    assert not test[0]["mask"][:, [0, 2]].any() and test[0]["mask"][:, 1].all()


def test_windows_with_too_few_observations_are_errors_or_dropped():
    values = _series(nodes=2)
    values[40:60] = np.nan  # 20 unobserved rows: windows fully inside them see nothing
    with pytest.raises(
        ValueError, match=r"train window\(s\) have too few observed values, the first starting at row 32"
    ):
        _dm(values).setup()
    dm = _dm(values, invalid="mask")
    dm.setup()
    starts = dm.dataset("train").starts.tolist()
    assert (
        32 not in starts
        and 52 not in starts
        and 31 in starts
        and 53 in starts
        and dm.dropped_windows["train"] > 0
    )
    # a stricter threshold drops more windows: half the inputs must be observed
    strict = _dm(values, invalid="mask", min_observed=0.5)
    strict.setup()
    assert len(strict.dataset("train")) < len(dm.dataset("train"))


def test_steps_per_day_is_inferred_from_dates_and_an_explicit_disagreeing_value_is_an_error():
    dates = pd.date_range("2020-01-01", periods=120, freq="h")
    dm = _dm(_series(), dates=dates)
    dm.setup()
    assert dm.steps_per_day == 24
    u = dm.dataset("train")[1]["u"]
    assert u[0, 0].item() == pytest.approx(1 / 24) and u[0, 1].item() == 2.0  # 01:00 on a Wednesday
    with pytest.raises(
        ValueError, match=r"`steps_per_day`=288 disagrees with the timestamps of `values`, which have 24"
    ):
        _dm(_series(), dates=dates, steps_per_day=288).setup()
    assert infer_steps_per_day(pd.date_range("2020-01-01", periods=3, freq="5min")) == 288
    with pytest.raises(ValueError, match="timestamps must be strictly increasing: row 2"):
        infer_steps_per_day(pd.to_datetime(["2020-01-01", "2020-01-02", "2020-01-02"]))
    check_steps_per_day(7, None)  # weekly data: no time-of-day grid, nothing to check


def test_history_reaches_before_the_split_and_pads_the_series_start():
    values = np.arange(120, dtype=np.float32)
    dm = _dm(values, scale=False, history=30)
    dm.setup()
    test = dm.dataset("test")
    first = test[0]
    assert first["x_hist"].flatten().tolist() == list(range(70, 100))
    assert first["x"].flatten().tolist() == list(range(92, 100))
    train0 = dm.dataset("train")[0]
    assert not train0["x_hist_mask"][:22].any() and train0["x_hist_mask"][22:].all()
    with pytest.raises(ValueError, match=r"`history` \(5\) must be 0 \(off\) or at least the lookback \(8\)"):
        _dm(values, history=5)
    with pytest.raises(ValueError, match=r"`invalid` must be one of \['raise', 'mask'\], got 'drop'"):
        _dm(values, invalid="drop")


def test_nothing_left_to_learn_is_an_error_even_when_masking():
    values = np.full((120, 3), np.nan, dtype=np.float32)  # all NaN: every channel is masked
    with pytest.raises(ValueError, match=r"every channel is never observed or constant in the training rows"):
        _dm(values, invalid="mask").setup()
    values = _series(nodes=2)
    values[::2] = np.nan  # half the rows observed: no window has more than half of its values
    with pytest.raises(ValueError, match=r"no training window is left: all \d+ have too few observed values"):
        _dm(values, invalid="mask", min_observed=0.5).setup()
    _dm(values, invalid="mask", min_observed=0.4).setup()  # a lower bar keeps them
