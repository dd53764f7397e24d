"""Forecaster: masked metrics match a reference, scaler-aware metrics, per-horizon metrics, predict, errors."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from torch import nn

from lightning_addons.datamodules import TimeSeriesDataModule
from lightning_addons.modules import Forecaster
from lightning_addons.modules.nn import ITransformer, LinearForecaster, SeasonalNaive


def _trainer(**kw):
    return pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kw,
    )


class _Constant(nn.Module):
    def __init__(self, horizon: int, value: float = 0.0):
        super().__init__()
        self.horizon, self.value = horizon, value
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        b, _, n, f = x.shape
        return torch.full((b, self.horizon, n, f), self.value) + 0 * self.dummy


def _series_with_gaps():
    rng = np.random.default_rng(0)
    values = (rng.normal(10, 3, (120, 3))).astype(np.float32)
    values[100:110, 1] = np.nan
    return values


def test_masked_metrics_match_numpy_in_original_units():
    values = _series_with_gaps()
    dm = TimeSeriesDataModule(values, lookback=6, horizon=3, splits=[80, 10, 30], batch_size=7)
    module = Forecaster(_Constant(3, 0.0), metrics_space="original")
    res = _trainer().test(module, datamodule=dm, verbose=False)[0]
    # a constant 0 in scaled space predicts the training mean in original units
    mean = np.nanmean(values[:80], axis=0)
    targets, preds = [], []
    for s in range(90 - 6, 120 - 6 - 3 + 1):  # test windows start `lookback` rows before row 90
        y = values[s + 6 : s + 9]
        targets.append(y)
        preds.append(np.broadcast_to(mean, y.shape))
    y, p = np.stack(targets), np.stack(preds)
    ok = ~np.isnan(y)
    err = (p - y)[ok]
    assert res["test_mae"] == pytest.approx(np.abs(err).mean(), rel=1e-4)
    assert res["test_mse"] == pytest.approx((err**2).mean(), rel=1e-4)
    assert res["test_rmse"] == pytest.approx(np.sqrt((err**2).mean()), rel=1e-4)
    assert res["test_mape"] == pytest.approx(np.abs(err / y[ok]).mean(), rel=1e-3)
    per_step = [np.abs((p - y)[:, h][ok[:, h]]).mean() for h in range(3)]
    assert module.test_horizon_metrics["mae"] == pytest.approx(per_step, rel=1e-4)
    assert res["test_mae_h3"] == pytest.approx(per_step[2], rel=1e-4)


@pytest.mark.stochastic
def test_training_reduces_error_and_predict_returns_original_units(seed_offset):
    t = np.arange(600, dtype=np.float32)
    values = np.stack([100 + 10 * np.sin(2 * np.pi * t / 24), 5 * np.cos(2 * np.pi * t / 12)], 1)
    dm = TimeSeriesDataModule(values, lookback=24, horizon=6, splits=[400, 100, 100], batch_size=32)
    torch.manual_seed(seed_offset)
    model = ITransformer(
        window=24, horizon=6, d_model=16, d_ff=16, n_heads=2, num_layers=1, mixer="mlp", dropout=0.0
    )
    module = Forecaster(model, loss="mse", lr=1e-2)
    before = _trainer().test(module, datamodule=dm, verbose=False)[0]["test_mse"]
    _trainer(max_epochs=3).fit(module, datamodule=dm)
    after = _trainer().test(module, datamodule=dm, verbose=False)[0]["test_mse"]
    assert after < 0.2 * before
    preds = torch.cat(_trainer().predict(module, datamodule=dm))
    assert preds.shape == (len(dm.dataset("test")), 6, 2, 1)
    assert abs(preds[:, :, 0].mean().item() - 100) < 3  # original units, not z-scores


def test_bad_input_errors():
    with pytest.raises(ValueError, match=r"`loss` must be one of \['mae', 'mse', 'huber'\], got 'l3'"):
        Forecaster(LinearForecaster(4, 2), loss="l3")
    with pytest.raises(
        ValueError, match=r"`metrics_space` must be one of \['scaled', 'original', 'both'\], got 'raw'"
    ):
        Forecaster(LinearForecaster(4, 2), metrics_space="raw")
    with pytest.raises(ValueError, match="`lr` must be > 0"):
        Forecaster(LinearForecaster(4, 2), lr=0)
    module = Forecaster(LinearForecaster(4, 2))
    y = torch.zeros(2, 2, 3, 1)
    y[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="contains NaN but the batch has no `mask`"):
        module.training_step((torch.zeros(2, 4, 3, 1), y), 0)
    with pytest.raises(ValueError, match=r"predicts shape \(2, 2, 3, 1\) but the target has \(2, 5, 3, 1\)"):
        module.training_step((torch.zeros(2, 4, 3, 1), torch.zeros(2, 5, 3, 1)), 0)
    with pytest.raises(ValueError, match="metrics_space='original' needs a datamodule with a `scaler`"):
        dm = TimeSeriesDataModule(
            np.arange(40, dtype=np.float32), lookback=4, horizon=2, splits=[20, 10, 10], scale=False
        )
        _trainer().test(Forecaster(LinearForecaster(4, 2), metrics_space="original"), datamodule=dm)

    with pytest.raises(ValueError, match="SeasonalNaive has no trainable parameters"):
        Forecaster(SeasonalNaive(4, 2, season=2)).configure_optimizers()
