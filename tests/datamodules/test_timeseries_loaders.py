"""LTSF, traffic-graph and graph-signal loaders: offline against the shared files or tiny written ones."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from lightning_addons.datamodules import (
    ETTDataModule,
    ETTh1DataModule,
    GraphSignalDataModule,
    LTSFDataModule,
    TrafficGraphDataModule,
)
from lightning_addons.datamodules.graph_signals import seasonal_graph_signal
from lightning_addons.datamodules.ltsf import load_ltsf


def _write_csv(path, rows=300, freq="10min", cols=3):
    dates = pd.date_range("2020-01-01", periods=rows, freq=freq)
    data = {"date": dates.strftime("%Y-%m-%d %H:%M:%S")}
    rng = np.random.default_rng(0)
    for i in range(cols - 1):
        data[f"v{i}"] = rng.normal(size=rows)
    data["OT"] = rng.normal(size=rows)
    pd.DataFrame(data).to_csv(path, index=False)
    return path


def test_ett_loader_matches_the_etth1_datamodule(shared_data):
    new = ETTDataModule("ETTh1", path=str(shared_data / "ETTh1.csv"), lookback=96, horizon=96)
    old = ETTh1DataModule(path=str(shared_data / "ETTh1.csv"))
    new.setup()
    old.setup()
    assert new.steps_per_day == 24 and new.splits == [8640, 2880, 2880]
    for split in ("train", "test"):
        a, b = new.dataset(split), old.dataset(split)
        assert len(a) == len(b)
        assert (a[5]["x"] == b[5]["x"]).all() and (a[5]["u"] == b[5]["u"]).all()


def test_ltsf_datasets_read_a_local_file_with_their_reference_split(tmp_path):
    path = _write_csv(tmp_path / "weather.csv", rows=1000)
    dm = LTSFDataModule("Weather", path=str(tmp_path), lookback=24, horizon=12, features="S")
    dm.setup()
    assert dm.splits == [700, 100, 200] and dm.num_nodes == 1 and dm.steps_per_day == 144
    assert dm.dataset("test")[0]["y"].shape == (12, 1, 1)
    with pytest.raises(
        ValueError, match="Weather has no direct download: get 'weather.csv' from the Autoformer"
    ):
        load_ltsf("Weather")
    with pytest.raises(ValueError, match=r"`name` must be one of \['ETTh1', .*'ILI'\], got 'ETTh3'"):
        LTSFDataModule("ETTh3")
    with pytest.raises(ValueError, match=r"`steps_per_day`=24 disagrees with the timestamps of Weather file"):
        LTSFDataModule("Weather", path=str(path), lookback=24, horizon=12, steps_per_day=24).setup()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_ltsf("ILI", tmp_path / "nowhere.csv")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("when,a\n2020-01-01,1\n", r"no 'date' column \(columns: \['when', 'a'\]\)"),
        ("date,a\nyesterday-ish,1\n", "unparseable 'date' values"),
        ("date,a,OT\n2020-01-01,1,2\n2020-01-02,x,3\n", r"non-numeric value 'x' in column 'a', data row 1"),
        ("date\n2020-01-01\n", "no variable columns besides 'date'"),
    ],
)
def test_malformed_ltsf_files_are_clear_errors_naming_the_file(tmp_path, content, message):
    path = tmp_path / "exchange_rate.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=f"malformed file '{path}'.*{message}"):
        load_ltsf("Exchange", path)


def test_node_link_json_graph_signal_with_dates_and_weights(tmp_path):
    rng = np.random.default_rng(1)
    nodes = [{"id": f"n{i}", "series": rng.normal(size=60).tolist()} for i in range(4)]
    links = [{"source": "n0", "target": "n1", "weight": 2.0}, {"source": "n2", "target": "n3", "weight": 0.5}]
    path = tmp_path / "g.json"
    path.write_text(json.dumps({"nodes": nodes, "links": links, "start": "2021-03-01", "freq": "30min"}))
    dm = GraphSignalDataModule(path, lookback=6, horizon=2)
    dm.setup()
    assert dm.num_nodes == 4 and dm.steps_per_day == 48
    assert dm.edge_index.tolist() == [[0, 2], [1, 3]] and dm.edge_weight.tolist() == [2.0, 0.5]
    assert dm.node_names == ["n0", "n1", "n2", "n3"]


def test_pyg_temporal_json_loads_chickenpox_with_its_graph(shared_data):
    dm = GraphSignalDataModule(shared_data / "chickenpox.json", start="2005-01-03", freq="7D")
    dm.setup()
    assert dm.num_nodes == 20 and tuple(dm.edge_index.shape) == (2, 102) and dm.edge_weight is None
    assert dm.steps_per_day is None and dm.node_names[4] == "BUDAPEST"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("{not json", "not JSON"),
        (json.dumps({"nodes": [{"id": "a"}]}), "missing key 'series'"),
        (json.dumps({"edges": [[0, 5]], "FX": [[1.0, 2.0]]}), r"edges refer to nodes outside 0\.\.1"),
        (
            json.dumps({"nodes": [{"id": "a", "series": [1, 2]}, {"id": "b", "series": [1]}], "links": []}),
            r"different lengths \[1, 2\]",
        ),
    ],
)
def test_malformed_graph_signal_files_are_clear_errors(tmp_path, payload, message):
    path = tmp_path / "bad.json"
    path.write_text(payload)
    with pytest.raises(ValueError, match=f"malformed graph signal file '{path}'.*{message}"):
        GraphSignalDataModule(path).setup()


def test_traffic_graph_reads_tsl_layout_masks_zeros_and_builds_the_kernel_adjacency(tmp_path):
    index = pd.date_range("2012-03-01", periods=400, freq="5min").delete([10, 11])  # two missing steps
    rng = np.random.default_rng(0)
    speeds = pd.DataFrame(
        rng.uniform(20, 70, (len(index), 5)), index=index, columns=[f"{i}" for i in range(5)]
    )
    speeds.iloc[50, 2] = 0.0
    speeds.to_hdf(tmp_path / "metr_la.h5", key="df")
    dist = np.full((5, 5), np.inf)
    np.fill_diagonal(dist, 0.0)
    dist[0, 1] = dist[1, 0] = 10.0
    dist[3, 4] = 15.0
    dist[0, 4] = 300.0  # far: below the kernel threshold
    np.save(tmp_path / "metr_la_dist.npy", dist)
    dm = TrafficGraphDataModule("METR-LA", path=str(tmp_path), lookback=12, horizon=12)
    dm.setup()
    assert dm.num_nodes == 5 and dm.steps_per_day == 288
    assert dm.edge_index.tolist() == [[0, 1, 3], [1, 0, 4]]
    assert dm._values.shape[0] == 400 and np.isnan(dm._values[10:12]).all() and np.isnan(dm._values[52, 2, 0])
    with pytest.raises(FileNotFoundError, match=r"lacks \['pems_bay.h5', 'pems_bay_dist.npy'\]"):
        TrafficGraphDataModule("PEMS-BAY", path=str(tmp_path)).setup()


def test_seasonal_graph_signal_has_daily_and_weekly_cycles():
    values, edge_index, edge_weight, dates = seasonal_graph_signal(
        num_nodes=30, steps=24 * 7 * 6, neighbours=4, seed=0
    )
    assert values.shape == (1008, 30) and edge_index.shape == (2, 120) and np.allclose(edge_weight, 0.25)
    centred = values - values.mean(0)
    lag = lambda k: float((centred[k:] * centred[:-k]).mean() / centred.var())  # noqa: E731
    assert lag(24) > lag(12) and lag(168) > lag(84)
