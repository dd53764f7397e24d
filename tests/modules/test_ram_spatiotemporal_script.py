"""benchmarks/ram_spatiotemporal.py end to end on a tiny METR-LA file in tsl's layout (the real files are not
shipped): baselines and a trained STAEformer in original units, each row written to the JSON at once."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "ram_spatiotemporal.py"


def _script():
    spec = importlib.util.spec_from_file_location("_ram_spatiotemporal", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_metr_la(folder: Path, rows: int = 400, nodes: int = 4) -> None:
    index = pd.date_range("2012-03-01", periods=rows, freq="5min")
    rng = np.random.default_rng(0)
    daily = np.sin(2 * np.pi * np.arange(rows) / 288)[:, None]
    speeds = 50 + 10 * daily + rng.normal(0, 1, (rows, nodes))
    speeds[100, 1] = 0.0  # a missing reading, masked
    pd.DataFrame(speeds, index=index, columns=[str(i) for i in range(nodes)]).to_hdf(
        folder / "metr_la.h5", key="df"
    )
    dist = np.full((nodes, nodes), np.inf)
    np.fill_diagonal(dist, 0.0)
    dist[0, 1] = dist[1, 0] = dist[2, 3] = 10.0
    np.save(folder / "metr_la_dist.npy", dist)


def test_traffic_from_a_local_tsl_folder_reports_baselines_and_staeformer_in_original_units(tmp_path):
    pytest.importorskip("tables")
    _write_metr_la(tmp_path)
    out = tmp_path / "runs" / "st.json"
    rows = _script().main(
        ["--datasets", "traffic", "--traffic-path", str(tmp_path), "--epochs", "1", "--models", "mlp",
         "--batch-size", "32", "--json", str(out)]
    )  # fmt: skip
    models = [r["model"] for r in rows]
    assert models == [
        "last value",
        "seasonal naive (daily)",
        "seasonal naive (weekly)",
        "STAEformer/mlp (both axes)",
    ]
    assert all(r["dataset"] == "METR-LA" for r in rows)
    trained = rows[-1]
    assert (
        trained["batch_size"] == 32 and trained["train_steps"] == 9
    )  # 280 - 24 + 1 = 257 windows / 32, rounded up
    assert trained["cpu_seconds"] > 0 and trained["fit_seconds"] <= trained["seconds"]
    # original units: speeds near 50 km/h, so errors are in km/h, not in scaled units
    last = rows[0]
    assert 0.5 < last["test_mae_original"] < 5 and last["test_mae"] != pytest.approx(
        last["test_mae_original"]
    )
    assert json.loads(out.read_text())["runs"] == json.loads(json.dumps(rows))
    assert not any("val_mae_original" in r for r in rows)  # validation scores only on --validate


def test_validate_scores_every_row_on_the_validation_split_in_original_units(tmp_path):
    pytest.importorskip("tables")
    _write_metr_la(tmp_path)
    rows = _script().main(
        ["--datasets", "traffic", "--traffic-path", str(tmp_path), "--epochs", "1", "--models", "mlp",
         "--batch-size", "32", "--validate"]
    )  # fmt: skip
    assert [r["model"] for r in rows][-1] == "STAEformer/mlp (both axes)"
    for r in rows:
        assert {"val_mae", "val_mae_original", "val_rmse_original"} <= set(r)
        assert 0 < r["val_mae_original"] <= r["val_rmse_original"]
        assert r["val_mae_original"] != pytest.approx(r["val_mae"])  # km/h, not scaled units
    # a different split from the test rows: the last-value baseline scores differently on it
    assert rows[0]["val_mae_original"] != pytest.approx(rows[0]["test_mae_original"], rel=1e-4)


def test_unknown_variant_or_dataset_is_a_clear_error_before_any_work(capsys):
    script = _script()
    with pytest.raises(SystemExit):
        script.main(["--models", "mlp,lstm"])
    assert (
        "--models must be a comma-separated subset of ['attention', 'mlp', 'mlp-time'], got 'mlp,lstm'"
        in (capsys.readouterr().err)
    )
    with pytest.raises(SystemExit):
        script.main(["--datasets", "metr"])
    assert "--datasets must be a comma-separated subset of ['chickenpox', 'synthetic', 'traffic']" in (
        capsys.readouterr().err
    )
    with pytest.raises(SystemExit):
        script.main(["--datasets", "traffic"])
    assert "--datasets traffic needs --traffic-path" in capsys.readouterr().err
