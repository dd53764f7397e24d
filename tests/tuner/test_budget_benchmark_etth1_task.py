"""The ETTh1 forecasting task of ``benchmarks/hypertuner_budget.py`` (``--task etth1``): windows from the
standard split, a trial that reports per epoch, and the hypervolume space that ranks a lower MSE higher."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def hb(shared_data, budget_benchmark):
    return budget_benchmark


def test_etth1_windows_come_from_the_standard_split_without_validation_targets_in_training(hb):
    from lightning_addons.data import shared_data_path
    from lightning_addons.datamodules.timeseries import ETT_HOURLY_SPLITS, load_etth1

    d = hb.etth1_data()
    n_train = hb.ETTH1_TRAIN_WINDOWS
    assert d["Xtr"].shape == d["ytr"].shape == (n_train, 96, 7, 1)
    assert d["Xva"].shape == (hb.ETTH1_VAL_WINDOWS, 96, 7, 1)
    values = load_etth1(shared_data_path("ETTh1.csv")).drop(columns="date").to_numpy(np.float32)
    n_tr, n_va, _ = ETT_HOURLY_SPLITS
    z = (values - values[:n_tr].mean(0)) / values[:n_tr].std(0)
    # locate every window's first target row in the z-scored series: training targets end inside the
    # training rows, validation targets lie inside the validation rows
    starts = {row.tobytes(): i for i, row in enumerate(z)}  # float32, computed as the benchmark does
    tr_rows = [starts[w[0, :, 0].numpy().tobytes()] for w in d["ytr"]]
    va_rows = [starts[w[0, :, 0].numpy().tobytes()] for w in d["yva"]]
    assert max(tr_rows) + 96 <= n_tr
    assert min(va_rows) >= n_tr and max(va_rows) + 96 <= n_tr + n_va
    # the lookback ends right before the targets (it may reach back into the training rows, as in LTSF)
    np.testing.assert_allclose(d["Xva"][0, -1, :, 0].numpy(), z[va_rows[0] - 1], rtol=1e-5, atol=1e-6)


def test_an_etth1_trial_reports_each_epoch_and_a_lower_mse_ranks_higher(hb):
    reports = []
    params = {"lr": 3e-3, "d_model": 16, "num_layers": 1, "mixer": "mlp", "batch_size": 64}
    out = hb.train_etth1(params, lambda epoch, v: reports.append((epoch, v)), epochs=2)
    assert [e for e, _ in reports] == [1, 2] and set(out) == {"val_mse", "time"}
    assert np.isfinite(out["val_mse"]) and out["val_mse"] > 0 and reports[-1][1]["val_mse"] == out["val_mse"]
    F = hb._F(np.array([[0.5, 1.0], [0.8, 1.0], [0.5, 2.0]]), "etth1")
    assert F[0, 0] > F[1, 0] and F[0, 1] > F[2, 1]  # maximisation space: lower MSE and less time are better


def test_train_windows_zero_takes_every_training_window_and_a_negative_size_is_refused(hb):
    from lightning_addons.datamodules.timeseries import ETT_HOURLY_SPLITS

    n_tr = ETT_HOURLY_SPLITS[0]
    try:
        hb.set_etth1_train_windows(0)
        d = hb.etth1_data()
        assert d["Xtr"].shape == (n_tr - 96 - 96 + 1, 96, 7, 1)
        with pytest.raises(ValueError, match=r"`--train-windows` must be >= 0 .* got -1"):
            hb.set_etth1_train_windows(-1)
    finally:
        hb.set_etth1_train_windows(384)
    assert hb.etth1_data()["Xtr"].shape[0] == 384


def test_a_results_file_with_runs_of_another_training_size_is_refused(hb, tmp_path, monkeypatch):
    import json
    import sys

    out = tmp_path / "runs.jsonl"
    out.write_text(
        json.dumps({"kind": "run", "task": "etth1", "method": "ht", "seed": 0, "trials": []}) + "\n"
    )
    argv = [
        "hypertuner_budget.py",
        "--task",
        "etth1",
        "--train-windows",
        "0",
        "--summary-only",
        "--out",
        str(out),
    ]
    monkeypatch.setattr(sys, "argv", argv)
    try:
        with pytest.raises(SystemExit, match=r"size \[.train_windows=384.\], not .train_windows=0."):
            hb.main()
    finally:
        hb.set_etth1_train_windows(384)
