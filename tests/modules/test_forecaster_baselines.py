"""Baselines (seasonal naive with history, closed-form linear, DLinear) and metrics in both spaces."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import torch

from lightning_addons.datamodules import TimeSeriesDataModule
from lightning_addons.modules import Forecaster
from lightning_addons.modules.nn import (
    DLinear,
    LinearForecaster,
    SeasonalNaive,
    STAEformer,
    fit_least_squares,
)


def _trainer(**kw):
    return pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kw,
    )


def _weekly_hourly(rows=24 * 7 * 6, nodes=2):
    t = np.arange(rows)
    week = (
        np.sin(2 * np.pi * t / 168)[:, None] * np.array([3.0, 5.0])[:nodes] + np.array([10.0, -4.0])[:nodes]
    )
    return week.astype(np.float32), pd.date_range("2021-01-04", periods=rows, freq="h")


def test_weekly_seasonal_naive_beyond_the_lookback_is_exact_on_a_weekly_cycle():
    values, dates = _weekly_hourly()
    dm = TimeSeriesDataModule(
        values, lookback=24, horizon=12, splits=[0.6, 0.2, 0.2], dates=dates, history=168
    )
    module = Forecaster(SeasonalNaive(24, 12, season=168), metrics_space="both")
    res = _trainer().test(module, datamodule=dm, verbose=False)[0]
    assert res["test_mae"] < 1e-5 and res["test_mae_original"] < 1e-4
    # a daily season on the same data is wrong, by a known amount in both spaces
    daily = _trainer().test(
        Forecaster(SeasonalNaive(24, 12, season=24), metrics_space="both"), datamodule=dm, verbose=False
    )[0]
    assert daily["test_mae"] > 0.1
    ratio = daily["test_mae_original"] / daily["test_mae"]  # per-channel std weights the original errors
    assert min(dm.scaler.std.flatten().tolist()) <= ratio <= max(dm.scaler.std.flatten().tolist())


def test_seasonal_naive_longer_than_the_lookback_without_history_is_a_clear_error():
    with pytest.raises(
        ValueError, match=r"SeasonalNaive\(season=168\) is longer than the lookback \(24\): it needs `x_hist`"
    ):
        SeasonalNaive(24, 12, season=168)(torch.zeros(1, 24, 2, 1))


def test_both_spaces_equal_separate_scaled_and_original_runs():
    values, dates = _weekly_hourly()
    values = values + np.random.default_rng(0).normal(0, 0.5, values.shape).astype(np.float32)
    dm = TimeSeriesDataModule(values, lookback=24, horizon=6, splits=[0.6, 0.2, 0.2], dates=dates)
    torch.manual_seed(0)
    model = LinearForecaster(24, 6)
    both = _trainer().test(Forecaster(model, metrics_space="both"), datamodule=dm, verbose=False)[0]
    scaled = _trainer().test(Forecaster(model, metrics_space="scaled"), datamodule=dm, verbose=False)[0]
    original = _trainer().test(Forecaster(model, metrics_space="original"), datamodule=dm, verbose=False)[0]
    for name in ("mae", "mse", "rmse"):
        assert both[f"test_{name}"] == pytest.approx(scaled[f"test_{name}"], rel=1e-6)
        assert both[f"test_{name}_original"] == pytest.approx(original[f"test_{name}"], rel=1e-6)
    assert both["test_mse_original"] != pytest.approx(both["test_mse"], rel=1e-2)


def test_closed_form_linear_fit_solves_a_linear_process_exactly():
    rng = np.random.default_rng(0)
    series = np.zeros(400)
    series[:2] = rng.normal(size=2)
    for i in range(2, 400):  # noiseless AR(2): one-step forecasts are exactly linear in the lookback
        series[i] = 1.2 * series[i - 1] - 0.5 * series[i - 2] + 0.3 * np.sin(i)
    dm = TimeSeriesDataModule(
        series.astype(np.float32), lookback=16, horizon=1, splits=[0.6, 0.2, 0.2], scale=False
    )
    model = fit_least_squares(LinearForecaster(16, 1, use_norm=False), dm.dataset("train"), ridge=0.0)
    res = _trainer().test(Forecaster(model), datamodule=dm, verbose=False)[0]
    naive = _trainer().test(Forecaster(SeasonalNaive(16, 1, season=1)), datamodule=dm, verbose=False)[0]
    assert res["test_mae"] < 0.05 * naive["test_mae"]
    with pytest.raises(ValueError, match="windows have lookback 16 and horizon 1, the model 8 and 1"):
        fit_least_squares(LinearForecaster(8, 1), dm.dataset("train"))
    with pytest.raises(ValueError, match="fit_least_squares fits a LinearForecaster, got DLinear"):
        fit_least_squares(DLinear(16, 1, kernel_size=3), dm.dataset("train"))


def test_dlinear_decomposition_adds_up_and_its_shared_and_individual_heads_run():
    model = DLinear(window=12, horizon=3, kernel_size=5)
    s = torch.randn(2, 4, 12)
    rem, trend = model.decompose(s)
    torch.testing.assert_close(rem + trend, s)
    torch.testing.assert_close(trend[..., 5], s[..., 3:8].mean(-1))
    indiv = DLinear(window=12, horizon=3, kernel_size=5, individual=True, num_series=4)
    assert indiv(torch.randn(2, 12, 4, 1)).shape == (2, 3, 4, 1)
    with pytest.raises(ValueError, match="`kernel_size` must be odd"):
        DLinear(12, 3, kernel_size=4)
    with pytest.raises(ValueError, match=r"`x` has 5 series but DLinear was built with num_series=4"):
        indiv(torch.randn(2, 12, 5, 1))


def test_model_steps_per_day_disagreeing_with_hourly_data_is_an_error_at_setup():
    values, dates = _weekly_hourly(rows=600)
    dm = TimeSeriesDataModule(values, lookback=12, horizon=3, splits=[0.6, 0.2, 0.2], dates=dates)
    model = STAEformer(
        num_nodes=2,
        window=12,
        horizon=3,
        input_embedding_dim=4,
        tod_embedding_dim=4,
        dow_embedding_dim=4,
        adaptive_embedding_dim=4,
        d_ff=8,
        n_heads=2,
        num_layers_t=1,
        num_layers_s=1,
    )  # default steps_per_day=288 (5-minute data)
    with pytest.raises(
        ValueError,
        match=r"the model's `steps_per_day`=288 disagrees with the data, which has 24 steps per day",
    ):
        _trainer(max_epochs=1).fit(Forecaster(model), datamodule=dm)
