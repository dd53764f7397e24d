"""Graph signals: traffic graphs (METR-LA, PEMS-BAY), generic node-link JSON files, a seasonal synthetic graph.

* :class:`TrafficGraphDataModule`: METR-LA (207 sensors) and PEMS-BAY (325 sensors), 5-minute speeds, in
  tsl's folder layout (``metr_la.h5`` + ``metr_la_dist.npy``, or ``pems_bay.h5`` + ``pems_bay_dist.npy``);
  with no ``path`` tsl's ``MetrLA``/``PemsBay`` download and build it once into the cache (``tsl`` extra).
  Zeros are missing readings (masked); the adjacency is the thresholded Gaussian kernel of the road
  distances (DCRNN's, threshold 0.1), as ``edge_index`` + ``edge_weight``.
* :class:`GraphSignalDataModule`: a node-link JSON (``{"nodes": [{"id", "series"}], "links": [{"source",
  "target", "weight"?}], "start"?, "freq"?}``, networkx's ``node_link_data`` layout plus a series per node),
  or the PyTorch Geometric Temporal layout (``edges``, ``weights``?, ``FX``/``X``) of chickenpox.json and
  pedalme_london.json.
* :func:`seasonal_graph_signal`: a synthetic graph signal of any size with daily and weekly seasonality
  diffused over a random geometric graph, plus noise (for scale tests where no data is at hand).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from lightning_addons.data import cache_dir
from lightning_addons.datamodules.timeseries import TimeSeriesDataModule, _as_3d

TRAFFIC_GRAPHS = {
    "METR-LA": ("metr_la.h5", "metr_la_dist.npy", "MetrLA"),
    "PEMS-BAY": ("pems_bay.h5", "pems_bay_dist.npy", "PemsBay"),
}


def gaussian_kernel_edges(dist: np.ndarray, threshold: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """``exp(-(d / sigma)^2)`` over finite distances (``sigma`` = their std), kept where ``>= threshold``.

    Returns ``(edge_index [2, E], edge_weight [E])`` without self-loops, ``edge_index[0]`` the source
    (row of ``dist``).

    Examples:
        >>> d = np.array([[0.0, 1.0, np.inf], [1.0, 0.0, 3.0], [np.inf, 3.0, 0.0]])
        >>> ei, ew = gaussian_kernel_edges(d)
        >>> ei.tolist(), [round(float(w), 3) for w in ew]
        ([[0, 1], [1, 0]], [0.525, 0.525])
    """
    dist = np.asarray(dist, dtype=np.float64)
    if dist.ndim != 2 or dist.shape[0] != dist.shape[1]:
        raise ValueError(f"the distance matrix must be square [N, N], got shape {dist.shape}.")
    finite = dist[np.isfinite(dist)]
    sigma = finite.std() if finite.size else 1.0
    with np.errstate(over="ignore", invalid="ignore"):
        weight = np.exp(-np.square(dist / (sigma or 1.0)))
    weight[~np.isfinite(dist)] = 0.0
    np.fill_diagonal(weight, 0.0)
    src, dst = np.nonzero(weight >= threshold)
    return np.stack([src, dst]).astype(np.int64), weight[src, dst].astype(np.float32)


def load_traffic_graph(name: str, path: str | os.PathLike | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """METR-LA or PEMS-BAY: ``(speeds [T, N] on a regular 5-minute index, NaN = missing; distances [N, N])``.

    Args:
        name: ``"METR-LA"`` or ``"PEMS-BAY"``.
        path: folder in tsl's layout (``metr_la.h5`` + ``metr_la_dist.npy``); ``None``: the cache,
            built there once by tsl's dataset class (downloads; needs the ``tsl`` extra).

    Raises:
        ValueError: unknown name; malformed files (naming them).
        FileNotFoundError: ``path`` lacks the files.
    """
    if name not in TRAFFIC_GRAPHS:
        raise ValueError(f"`name` must be one of {list(TRAFFIC_GRAPHS)}, got {name!r}.")
    h5, dist_file, tsl_class = TRAFFIC_GRAPHS[name]
    root = Path(path).expanduser() if path is not None else cache_dir("datasets", name)
    missing = [f for f in (h5, dist_file) if not (root / f).exists()]
    if missing and path is not None:
        raise FileNotFoundError(
            f"path={str(path)!r} lacks {missing} (tsl's {tsl_class} layout: {h5} and {dist_file}; "
            f"tsl.datasets.{tsl_class}(root=...) downloads and builds it)."
        )
    if missing:
        try:
            import tsl.datasets as tsl_datasets
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError(
                f"downloading {name} needs tsl: pip install 'lightning-addons[tsl]' (or pass `path`)."
            ) from err
        dataset_cls = getattr(tsl_datasets, tsl_class)
        builder = dataset_cls.__new__(dataset_cls)  # build the files only (tsl's loaders need pandas < 3)
        builder.root = str(root)
        builder.maybe_build()
    try:
        df = pd.read_hdf(root / h5)
        dist = np.load(root / dist_file)
    except Exception as err:  # noqa: BLE001 - any reader failure is a malformed file
        raise ValueError(f"malformed {name} files in {str(root)!r}: {err}") from err
    if not isinstance(df, pd.DataFrame) or not isinstance(df.index, pd.DatetimeIndex):
        raise ValueError(
            f"malformed {root / h5}: expected a DataFrame with a DatetimeIndex of 5-minute steps."
        )
    if dist.shape != (df.shape[1], df.shape[1]):
        raise ValueError(
            f"malformed {root / dist_file}: distances {dist.shape} do not match the {df.shape[1]} sensors of {h5}."
        )
    df = df.sort_index()
    df = df.reindex(pd.date_range(df.index[0], df.index[-1], freq="5min"))
    df = df.mask(df == 0)  # zero speed = missing reading
    return df.astype(np.float32), dist


class TrafficGraphDataModule(TimeSeriesDataModule):
    """METR-LA / PEMS-BAY with the DCRNN protocol: 70/10/20 % split, lookback 12 -> horizon 12, masked zeros.

    Args:
        name: ``"METR-LA"`` or ``"PEMS-BAY"``.
        path: folder in tsl's layout; ``None``: cache (tsl downloads it once).
        lookback: input steps.
        horizon: forecast steps.
        splits: ``[train, val, test]`` fractions or row counts.
        batch_size: batch size.
        threshold: Gaussian-kernel threshold of the adjacency.
        history: ``x_hist`` length (e.g. 2016 for a weekly seasonal naive at 5 minutes).
        invalid: ``"raise"`` or ``"mask"``.
        num_workers: DataLoader workers.
    """

    def __init__(
        self,
        name: Literal["METR-LA", "PEMS-BAY"] = "METR-LA",
        path: str | None = None,
        lookback: int = 12,
        horizon: int = 12,
        splits: Sequence[float] = (0.7, 0.1, 0.2),
        batch_size: int = 64,
        threshold: float = 0.1,
        history: int = 0,
        invalid: Literal["raise", "mask"] = "raise",
        num_workers: int = 0,
    ) -> None:
        if name not in TRAFFIC_GRAPHS:
            raise ValueError(f"`name` must be one of {list(TRAFFIC_GRAPHS)}, got {name!r}.")
        super().__init__(
            None,
            lookback,
            horizon,
            splits,
            batch_size,
            True,
            1,
            num_workers=num_workers,
            history=history,
            invalid=invalid,
        )
        self.name, self.path, self.threshold = name, path, threshold

    def load(self) -> None:
        df, dist = load_traffic_graph(self.name, self.path)
        self.node_names = [str(c) for c in df.columns]
        self._values = _as_3d(df.to_numpy(dtype=np.float32))
        self._dates = df.index
        edge_index, edge_weight = gaussian_kernel_edges(dist, self.threshold)
        import torch

        self._edge_index = torch.as_tensor(edge_index)
        self._edge_weight = torch.as_tensor(edge_weight)
        self.source = f"{self.name} files in {self.path or cache_dir('datasets', self.name)}"


def load_graph_signal_json(
    path: str | os.PathLike,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, list[str], pd.DatetimeIndex | None]:
    """Read a graph signal JSON: ``(values [T, N], edge_index [2, E], edge_weight [E] or None, node ids, dates)``.

    Layouts: node-link (``nodes`` with ``id`` and ``series``; ``links`` or ``edges`` with ``source``,
    ``target``, optional ``weight``; optional ``start`` + ``freq`` or ``dates``) or PyTorch Geometric
    Temporal (``edges`` as pairs, optional ``weights``, ``FX`` or ``X`` as ``[T, N]``, optional
    ``node_ids``).

    Raises:
        ValueError: malformed file (naming it and what is wrong).

    Examples:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "g.json"
        >>> _ = f.write_text(json.dumps({"nodes": [{"id": "a", "series": [1, 2, 3]}, {"id": "b", "series": [4, 5, 6]}],
        ...                              "links": [{"source": "a", "target": "b", "weight": 0.5}],
        ...                              "start": "2020-01-01", "freq": "h"}))
        >>> values, ei, ew, ids, dates = load_graph_signal_json(f)
        >>> values.shape, ei.tolist(), ew.tolist(), ids, len(dates)
        ((3, 2), [[0], [1]], [0.5], ['a', 'b'], 3)
    """
    where = f"graph signal file {str(path)!r}"
    try:
        with open(path) as fh:
            raw = json.load(fh)
    except json.JSONDecodeError as err:
        raise ValueError(f"malformed {where}: not JSON ({err}).") from err
    if not isinstance(raw, dict):
        raise ValueError(f"malformed {where}: expected a JSON object, got {type(raw).__name__}.")
    try:
        if "nodes" in raw:
            nodes = raw["nodes"]
            ids = [n["id"] for n in nodes]
            index = {node_id: i for i, node_id in enumerate(ids)}
            lengths = {len(n["series"]) for n in nodes}
            if len(lengths) != 1:
                raise ValueError(f"the nodes' series have different lengths {sorted(lengths)}")
            values = np.asarray([n["series"] for n in nodes], dtype=np.float32).T
            links = raw.get("links", raw.get("edges", []))
            edge_index = np.asarray(
                [[index[e["source"]] for e in links], [index[e["target"]] for e in links]], dtype=np.int64
            ).reshape(2, -1)
            weights = [e.get("weight") for e in links]
            edge_weight = (
                None if any(w is None for w in weights) or not links else np.asarray(weights, np.float32)
            )
        else:
            key = "FX" if "FX" in raw else "X"
            values = np.asarray(raw[key], dtype=np.float32)
            edge_index = np.asarray(raw["edges"], dtype=np.int64).reshape(-1, 2).T
            edge_weight = np.asarray(raw["weights"], dtype=np.float32) if "weights" in raw else None
            node_ids = raw.get("node_ids")
            if isinstance(node_ids, dict):
                ids = sorted(node_ids, key=node_ids.get)
            else:
                ids = [str(i) for i in (node_ids or range(values.shape[1]))]
    except KeyError as err:
        raise ValueError(
            f"malformed {where}: missing key {err} (node-link: 'nodes' with 'id' and 'series', 'links' with "
            "'source'/'target'; or PyTorch Geometric Temporal: 'edges' and 'FX'/'X')."
        ) from err
    except (TypeError, ValueError) as err:
        raise ValueError(f"malformed {where}: {err}.") from err
    if values.ndim != 2:
        raise ValueError(f"malformed {where}: the series must form a [T, N] table, got shape {values.shape}.")
    n = values.shape[1]
    if len(ids) != n:
        raise ValueError(f"malformed {where}: {len(ids)} node ids for {n} series.")
    if edge_index.size and (edge_index.min() < 0 or edge_index.max() >= n):
        raise ValueError(f"malformed {where}: edges refer to nodes outside 0..{n - 1}.")
    if edge_weight is not None and edge_weight.shape[0] != edge_index.shape[1]:
        raise ValueError(
            f"malformed {where}: {edge_weight.shape[0]} weights for {edge_index.shape[1]} edges."
        )
    dates = None
    if "dates" in raw:
        dates = pd.DatetimeIndex(pd.to_datetime(raw["dates"]))
    elif "start" in raw and "freq" in raw:
        dates = pd.date_range(raw["start"], periods=values.shape[0], freq=raw["freq"])
    if dates is not None and len(dates) != values.shape[0]:
        raise ValueError(f"malformed {where}: {len(dates)} dates for {values.shape[0]} steps.")
    return values, edge_index, edge_weight, [str(i) for i in ids], dates


class GraphSignalDataModule(TimeSeriesDataModule):
    """A graph signal from a JSON file (node-link or PyTorch Geometric Temporal layout), with its graph.

    Args:
        path: the JSON file.
        lookback: input steps.
        horizon: forecast steps.
        splits: ``[train, val, test]`` fractions or row counts.
        batch_size: batch size.
        start: first timestamp when the file has none (e.g. ``"2005-01-03"``); with ``freq``.
        freq: pandas frequency of the steps (e.g. ``"7D"``, ``"h"``) when the file has none.
        history: ``x_hist`` length.
        steps_per_day: checked against the dates.
        invalid: ``"raise"`` or ``"mask"``.
        num_workers: DataLoader workers.

    Examples:
        >>> from lightning_addons.data import shared_data_path
        >>> dm = GraphSignalDataModule(shared_data_path("pedalme_london.json"), lookback=4, horizon=2,
        ...                            start="2020-01-06", freq="7D")
        >>> dm.setup()
        >>> dm.num_nodes, tuple(dm.edge_index.shape), tuple(dm.edge_weight.shape)
        (15, (2, 225), (225,))
    """

    def __init__(
        self,
        path: str | os.PathLike,
        lookback: int = 8,
        horizon: int = 4,
        splits: Sequence[float] = (0.7, 0.1, 0.2),
        batch_size: int = 32,
        start: str | None = None,
        freq: str | None = None,
        history: int = 0,
        steps_per_day: int | None = None,
        invalid: Literal["raise", "mask"] = "raise",
        num_workers: int = 0,
    ) -> None:
        if (start is None) != (freq is None):
            raise ValueError(f"`start` and `freq` go together, got start={start!r}, freq={freq!r}.")
        super().__init__(
            None,
            lookback,
            horizon,
            splits,
            batch_size,
            True,
            1,
            num_workers=num_workers,
            history=history,
            steps_per_day=steps_per_day,
            invalid=invalid,
        )
        self.path, self.start, self.freq = str(path), start, freq

    def load(self) -> None:
        if not Path(self.path).exists():
            raise FileNotFoundError(f"path={self.path!r} does not exist.")
        values, edge_index, edge_weight, ids, dates = load_graph_signal_json(self.path)
        import torch

        self.node_names = ids
        self._values = _as_3d(values)
        self._edge_index = torch.as_tensor(edge_index)
        self._edge_weight = None if edge_weight is None else torch.as_tensor(edge_weight)
        if dates is None and self.start is not None:
            dates = pd.date_range(self.start, periods=values.shape[0], freq=self.freq)
        self._dates = dates
        self.source = f"graph signal file {self.path!r}"


def seasonal_graph_signal(
    num_nodes: int = 500,
    steps: int = 24 * 7 * 12,
    steps_per_day: int = 24,
    neighbours: int = 8,
    noise: float = 0.3,
    seed: int = 0,
    start: str = "2024-01-01",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, pd.DatetimeIndex]:
    """A synthetic graph signal with daily and weekly seasonality, spatially smoothed, plus AR(1) noise.

    Each node gets a daily and a weekly profile (random phases and amplitudes, smoothed over a random
    geometric k-nearest-neighbour graph so neighbours look alike), a level, and AR(1) noise
    (coefficient 0.8, innovations of std ``noise``) diffused one hop over the graph: the seasonal part is
    predictable from the calendar, the noise from the recent past and the neighbours.

    Returns:
        ``(values [steps, N], edge_index [2, E], edge_weight [E], dates)``.

    Examples:
        >>> values, ei, ew, dates = seasonal_graph_signal(num_nodes=20, steps=24 * 14, neighbours=3)
        >>> values.shape, ei.shape[0], str(dates.freq)
        ((336, 20), 2, '<Hour>')
    """
    for name, value in (("num_nodes", num_nodes), ("steps", steps), ("steps_per_day", steps_per_day)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    if not 0 < neighbours < num_nodes:
        raise ValueError(f"`neighbours` must be in 1..num_nodes-1 ({num_nodes - 1}), got {neighbours!r}.")
    rng = np.random.default_rng(seed)
    pos = rng.random((num_nodes, 2))
    d2 = ((pos[:, None] - pos[None]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    nbr = np.argsort(d2, axis=1)[:, :neighbours]
    src = nbr.reshape(-1)
    dst = np.repeat(np.arange(num_nodes), neighbours)
    weight = np.full(src.shape, 1.0 / neighbours, dtype=np.float32)

    def smooth(a: np.ndarray) -> np.ndarray:  # average with the neighbours (one hop)
        return 0.5 * a + 0.5 * a[nbr].mean(axis=1)

    t = np.arange(steps)
    day = 2 * np.pi * (t % steps_per_day) / steps_per_day
    week = 2 * np.pi * (t % (7 * steps_per_day)) / (7 * steps_per_day)
    amp_d, amp_w = smooth(rng.uniform(0.5, 2.0, num_nodes)), smooth(rng.uniform(0.3, 1.5, num_nodes))
    ph_d, ph_w = smooth(rng.uniform(0, 2 * np.pi, num_nodes)), smooth(rng.uniform(0, 2 * np.pi, num_nodes))
    level = smooth(rng.normal(5.0, 2.0, num_nodes))
    seasonal = (
        level
        + amp_d * np.sin(day[:, None] + ph_d)
        + 0.5 * amp_d * np.sin(2 * day[:, None] + ph_d)
        + amp_w * np.sin(week[:, None] + ph_w)
    )
    eps = np.zeros((steps, num_nodes))
    shocks = rng.normal(0.0, noise, (steps, num_nodes))
    for i in range(1, steps):
        prev = eps[i - 1]
        eps[i] = 0.8 * (0.5 * prev + 0.5 * prev[nbr].mean(axis=1)) + shocks[i]
    values = (seasonal + eps).astype(np.float32)
    dates = pd.date_range(start, periods=steps, freq=pd.Timedelta(days=1) / steps_per_day)
    return values, np.stack([src, dst]).astype(np.int64), weight, dates
