"""Sliding-window forecasting data: chronological splits, train-only scaling, masked missing values.

Batches are dicts: ``x`` ``[B, T, N, F]`` (scaled, missing values filled with 0), ``x_mask`` (bool, same
shape, ``True`` where observed), ``y`` ``[B, H, N, F]`` (scaled, filled), ``mask`` (``True`` where ``y``
is observed: metrics and losses ignore the rest) and, when time features exist, ``u`` ``[B, T, k]``
(``k=2``: time of day in ``[0, 1)``, day of week ``0..6``; the format ``STAEformer`` reads) and, with
``history > 0``, ``x_hist`` ``[B, history, N, F]`` (the ``history`` steps ending where ``x`` ends, reaching
back before the split's first row; rows before the series start are filled with 0) with ``x_hist_mask``.

Series validation (before any training): inf values, channels never observed (or constant) in the
training rows, and windows with too few observed values are errors naming the argument or file, unless
``invalid="mask"``, which treats inf as missing, masks those channels everywhere and drops those windows.
Time encodings come from the timestamps: :func:`infer_steps_per_day` gives the steps per day of
the data, which must agree with an explicit ``steps_per_day`` (and with a model's, checked by
:class:`~lightning_addons.modules.Forecaster`).

Datasets:

* :class:`ETTh1DataModule`: the LTSF benchmark ETTh1 (7 variables, hourly), standard 12/4/4-month
  split (8,640 / 2,880 / 2,880 rows), lookback 96, horizons 96/192/336/720, z-scores fitted on train.
* :class:`ChickenpoxDataModule`: weekly chickenpox cases in the 20 Hungarian counties, with the county
  graph (``edge_index``).
* :class:`StocksDemoDataModule`: an embedded demo needing no download: the monthly stock prices that
  matplotlib ships (``Stocks.csv``: 10 series, 1990-2017, with gaps where a company was not listed).

Every loader downloads from the canonical source once into the cache
(:func:`lightning_addons.data.fetch`), or reads ``path`` (a file or a folder holding it).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from lightning_addons.data import fetch

ETTH1_URL = "https://raw.githubusercontent.com/zhouhaoyi/ETDataset/main/ETT-small/ETTh1.csv"
ETTH1_SHA256 = "f18de3ad269cef59bb07b5438d79bb3042d3be49bdeecf01c1cd6d29695ee066"
CHICKENPOX_URL = "https://raw.githubusercontent.com/benedekrozemberczki/pytorch_geometric_temporal/master/dataset/chickenpox.json"
CHICKENPOX_SHA256 = "724b48cfb274b2ecbb855bdb99b970b5ef9dd3671694fa477435dc1e08293735"
#: ETT standard split: 12 / 4 / 4 months of hourly rows.
ETT_HOURLY_SPLITS = (12 * 30 * 24, 4 * 30 * 24, 4 * 30 * 24)
LTSF_HORIZONS = (96, 192, 336, 720)


def load_etth1(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """ETTh1 as a DataFrame (``date`` parsed, 7 float columns; target ``OT``).

    Args:
        path: local ``ETTh1.csv`` or a folder holding it; ``None`` downloads it once from
            github.com/zhouhaoyi/ETDataset into the cache.

    Examples:
        >>> from lightning_addons.data import shared_data_path
        >>> load_etth1(shared_data_path("ETTh1.csv")).shape
        (17420, 8)
    """
    file = fetch(ETTH1_URL, "ETTh1.csv", local_path=path, sha256=None if path else ETTH1_SHA256)
    return pd.read_csv(file, parse_dates=["date"])


def load_chickenpox(path: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Chickenpox-Hungary: ``(values [521, 20], edge_index [2, 102], county names)``.

    Values are the weekly case counts as published in the file (``FX``, already standardised there).

    Args:
        path: local ``chickenpox.json`` or a folder holding it; ``None`` downloads it once from
            github.com/benedekrozemberczki/pytorch_geometric_temporal into the cache.

    Examples:
        >>> from lightning_addons.data import shared_data_path
        >>> values, edge_index, names = load_chickenpox(shared_data_path("chickenpox.json"))
        >>> values.shape, edge_index.shape, names[4]
        ((521, 20), (2, 102), 'BUDAPEST')
    """
    file = fetch(
        CHICKENPOX_URL, "chickenpox.json", local_path=path, sha256=None if path else CHICKENPOX_SHA256
    )
    with open(file) as fh:
        raw = json.load(fh)
    values = np.asarray(raw["FX"], dtype=np.float32)
    edge_index = np.asarray(raw["edges"], dtype=np.int64).T
    names = (
        sorted(raw["node_ids"], key=raw["node_ids"].get)
        if isinstance(raw["node_ids"], dict)
        else raw["node_ids"]
    )
    return values, edge_index, list(names)


def load_stocks_demo() -> pd.DataFrame:
    """The monthly stock prices shipped with matplotlib (``mpl-data/sample_data/Stocks.csv``), no download.

    Rows without any price are dropped, and DELL (71 of 524 months observed); missing prices (companies not
    yet listed) stay NaN.

    Examples:
        >>> df = load_stocks_demo()
        >>> list(df.columns[:3]), bool(df["AMZN"].isna().any())
        (['date', 'IBM', 'AAPL'], True)
    """
    import matplotlib

    file = Path(matplotlib.get_data_path()) / "sample_data" / "Stocks.csv"
    df = pd.read_csv(file, comment="#", parse_dates=["Date"]).rename(columns={"Date": "date"})
    df = df.dropna(how="all", subset=[c for c in df.columns if c != "date"]).reset_index(drop=True)
    return df.drop(columns=["DELL"], errors="ignore")


def infer_steps_per_day(dates: pd.Series | pd.DatetimeIndex) -> int | None:
    """Steps per day of regularly spaced timestamps (median step), or ``None`` for steps of a day or more.

    ``None`` also when the step does not divide a day (no time-of-day grid to embed).

    Raises:
        ValueError: fewer than two timestamps, or timestamps not strictly increasing.

    Examples:
        >>> infer_steps_per_day(pd.date_range("2016-07-01", periods=5, freq="h"))
        24
        >>> infer_steps_per_day(pd.date_range("2016-07-01", periods=5, freq="15min"))
        96
        >>> infer_steps_per_day(pd.date_range("2005-01-03", periods=5, freq="7D")) is None
        True
    """
    stamps = pd.DatetimeIndex(dates)
    if len(stamps) < 2:
        raise ValueError(f"need at least 2 timestamps to infer their frequency, got {len(stamps)}.")
    steps = np.diff(stamps.as_unit("ns").asi8)
    if (steps <= 0).any():
        row = int(np.argmax(steps <= 0)) + 1
        raise ValueError(
            f"timestamps must be strictly increasing: row {row} ({stamps[row]}) follows {stamps[row - 1]}."
        )
    step_ns = int(np.median(steps))
    day_ns = 86400 * 10**9
    if step_ns >= day_ns or day_ns % step_ns:
        return None
    return day_ns // step_ns


def check_steps_per_day(
    steps_per_day: int | None, inferred: int | None, source: str = "the timestamps"
) -> None:
    """Raise if an explicit ``steps_per_day`` disagrees with the one the timestamps imply.

    Examples:
        >>> check_steps_per_day(24, 24)
        >>> check_steps_per_day(288, 24)
        Traceback (most recent call last):
        ...
        ValueError: `steps_per_day`=288 disagrees with the timestamps, which have 24 steps per day ...
    """
    if steps_per_day is None or inferred is None or steps_per_day == inferred:
        return
    raise ValueError(
        f"`steps_per_day`={steps_per_day} disagrees with {source}, which have {inferred} steps per day "
        f"(one step = {86400 / inferred:g} s): the time-of-day encoding would be wrong. Pass "
        f"steps_per_day={inferred} (or None to use the timestamps')."
    )


def time_features(dates: pd.Series | pd.DatetimeIndex) -> np.ndarray:
    """``[T, 2]``: time of day as a fraction of 24 h, and day of week (Monday = 0).

    Examples:
        >>> time_features(pd.to_datetime(["2016-07-01 06:00"])).tolist()
        [[0.25, 4.0]]
    """
    dates = pd.DatetimeIndex(dates)
    tod = (dates.hour * 3600 + dates.minute * 60 + dates.second) / 86400.0
    return np.stack(
        [np.asarray(tod, dtype=np.float32), np.asarray(dates.dayofweek, dtype=np.float32)], axis=1
    )


class StandardScaler(torch.nn.Module):
    """Per-(node, feature) z-score ``(x - mean) / std`` fitted on observed training values only.

    Args:
        mean: ``[N, F]``.
        std: ``[N, F]`` (zeros are replaced by 1).

    Examples:
        >>> s = StandardScaler(torch.tensor([[1.0]]), torch.tensor([[2.0]]))
        >>> s.inverse_transform(s.transform(torch.tensor([[[5.0]]]))).item()
        5.0
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        std = torch.where(std > 0, std, torch.ones_like(std))
        self.register_buffer("mean", mean.float())
        self.register_buffer("std", std.float())

    @classmethod
    def fit(cls, values: np.ndarray) -> StandardScaler:
        """Fit on ``values [T, N, F]`` ignoring NaNs."""
        with warnings.catch_warnings():  # all-NaN columns (never observed in train) get mean 0, std 1
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(values, axis=0)
            std = np.nanstd(values, axis=0)
        mean = np.nan_to_num(mean, nan=0.0)
        std = np.nan_to_num(std, nan=1.0)
        return cls(torch.as_tensor(mean), torch.as_tensor(std))

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x)) / self.std.to(x)

    def inverse_transform(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std.to(x) + self.mean.to(x)


class WindowDataset(Dataset):
    """Sliding windows over a ``[T, N, F]`` series.

    Args:
        values: scaled values with missing entries filled (``[T, N, F]``).
        mask: ``True`` where observed (``[T, N, F]``).
        lookback: T of a window.
        horizon: H of a window.
        stride: step between window starts.
        u: optional time features ``[T, k]``.
        first: first row of the windows (rows before it are only read as ``x_hist``).
        last: end row (exclusive) of the windows (default: all rows).
        history: length of ``x_hist`` (0: none), the steps ending where ``x`` ends.
        starts: explicit window start rows (overrides ``first``/``last``/``stride``).

    Examples:
        >>> ds = WindowDataset(torch.arange(10.0)[:, None, None], torch.ones(10, 1, 1, dtype=torch.bool), 2, 1,
        ...                    first=4, history=5)
        >>> len(ds), ds[0]["x"].flatten().tolist(), ds[0]["x_hist"].flatten().tolist()
        (4, [4.0, 5.0], [1.0, 2.0, 3.0, 4.0, 5.0])
    """

    def __init__(
        self,
        values: torch.Tensor,
        mask: torch.Tensor,
        lookback: int,
        horizon: int,
        stride: int = 1,
        u: torch.Tensor | None = None,
        first: int = 0,
        last: int | None = None,
        history: int = 0,
        starts: torch.Tensor | None = None,
    ) -> None:
        self.values, self.mask, self.u = values, mask, u
        self.lookback, self.horizon, self.history = lookback, horizon, history
        last = values.shape[0] if last is None else last
        if starts is None:
            starts = torch.arange(first, max(last - lookback - horizon + 1, first), stride)
        self.starts = starts

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        s = int(self.starts[i])
        t, h = self.lookback, self.horizon
        item = {
            "x": self.values[s : s + t],
            "x_mask": self.mask[s : s + t],
            "y": self.values[s + t : s + t + h],
            "mask": self.mask[s + t : s + t + h],
        }
        if self.u is not None:
            item["u"] = self.u[s : s + t]
        if self.history:
            a = s + t - self.history
            pad = max(0, -a)
            hist, hist_mask = self.values[max(a, 0) : s + t], self.mask[max(a, 0) : s + t]
            if pad:
                hist = torch.cat([hist.new_zeros((pad, *hist.shape[1:])), hist])
                hist_mask = torch.cat([hist_mask.new_zeros((pad, *hist_mask.shape[1:])), hist_mask])
            item["x_hist"], item["x_hist_mask"] = hist, hist_mask
        return item


def _as_3d(values) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[:, None, None]
    elif arr.ndim == 2:
        arr = arr[:, :, None]
    elif arr.ndim != 3:
        raise ValueError(
            f"`values` must be [T], [T, N] or [T, N, F], got an array of shape {arr.shape} (rank {arr.ndim})."
        )
    return arr


class TimeSeriesDataModule(pl.LightningDataModule):
    """Sliding-window forecasting over one multivariate series, chronologically split.

    Rows ``[0, train)`` are training data; validation windows start ``lookback`` rows before the
    train/val border so that every validation target is a validation row (the Informer/ETT convention),
    likewise for test. Scaling statistics come from the training rows only. NaNs are missing values:
    they are filled with 0 after scaling and marked ``False`` in the masks.

    Args:
        values: ``[T]``, ``[T, N]`` or ``[T, N, F]`` array (subclasses load it instead).
        lookback: input steps T.
        horizon: forecast steps H.
        splits: three row counts ``[train, val, test]`` or three fractions summing to at most 1.
        batch_size: batch size.
        scale: z-score with training statistics.
        stride: step between window starts (training windows).
        time_feats: optional ``[T, k]`` time features (``u`` in batches).
        edge_index: optional ``[2, E]`` graph.
        shuffle: shuffle training windows.
        num_workers: DataLoader workers.
        dates: optional ``[T]`` timestamps: time features ``u`` are derived from them (unless
            ``time_feats`` is given) and :attr:`steps_per_day` is inferred from their frequency.
        steps_per_day: the data's steps per day; with ``dates`` it must agree with their frequency.
        history: length of ``x_hist`` in batches (0: off; else ``>= lookback``), for baselines whose
            season is longer than the lookback (e.g. ``SeasonalNaive(season=168)`` at lookback 96).
        invalid: ``"raise"`` (default): inf values, channels never observed or constant in the training
            rows, and windows with too few observed values are errors; ``"mask"``: inf values become
            missing, such channels are masked everywhere, such windows are dropped.
        min_observed: a window needs more than this fraction of its input values and of its target
            values observed (default 0: at least one of each).
        edge_weight: optional ``[E]`` weights of ``edge_index``.

    Raises:
        ValueError: non-positive lookback/horizon/batch size, bad splits, a split too short for one
            window, or a wrongly shaped series; at setup, invalid values (see ``invalid``) or a
            ``steps_per_day`` that disagrees with ``dates``.

    Examples:
        >>> dm = TimeSeriesDataModule(np.sin(np.arange(200.0)), lookback=24, horizon=6, splits=[0.6, 0.2, 0.2])
        >>> dm.setup()
        >>> batch = next(iter(dm.train_dataloader()))
        >>> batch["x"].shape, batch["y"].shape
        (torch.Size([32, 24, 1, 1]), torch.Size([32, 6, 1, 1]))
    """

    def __init__(
        self,
        values=None,
        lookback: int = 96,
        horizon: int = 96,
        splits: Sequence[float] = (0.7, 0.1, 0.2),
        batch_size: int = 32,
        scale: bool = True,
        stride: int = 1,
        time_feats=None,
        edge_index=None,
        shuffle: bool = True,
        num_workers: int = 0,
        dates=None,
        steps_per_day: int | None = None,
        history: int = 0,
        invalid: Literal["raise", "mask"] = "raise",
        min_observed: float = 0.0,
        edge_weight=None,
    ) -> None:
        super().__init__()
        if invalid not in ("raise", "mask"):
            raise ValueError(f"`invalid` must be one of ['raise', 'mask'], got {invalid!r}.")
        if (
            isinstance(min_observed, bool)
            or not isinstance(min_observed, (int, float))
            or not 0 <= min_observed < 1
        ):
            raise ValueError(f"`min_observed` must be a fraction in [0, 1), got {min_observed!r}.")
        if isinstance(history, bool) or not isinstance(history, int) or history < 0:
            raise ValueError(f"`history` must be a non-negative integer, got {history!r}.")
        if history and history < lookback:
            raise ValueError(
                f"`history` ({history}) must be 0 (off) or at least the lookback ({lookback}): it counts the "
                "steps of `x_hist`, which ends where `x` ends."
            )
        if steps_per_day is not None and (
            isinstance(steps_per_day, bool) or not isinstance(steps_per_day, int) or steps_per_day <= 0
        ):
            raise ValueError(f"`steps_per_day` must be a positive integer or None, got {steps_per_day!r}.")
        for name, value in (
            ("lookback", lookback),
            ("horizon", horizon),
            ("batch_size", batch_size),
            ("stride", stride),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        splits = list(splits)
        if len(splits) != 3 or any((not isinstance(s, (int, float))) or s < 0 for s in splits):
            raise ValueError(
                f"`splits` must be three non-negative numbers [train, val, test], got {splits!r}."
            )
        if all(isinstance(s, float) for s in splits) and sum(splits) > 1.0 + 1e-9:
            raise ValueError(
                f"`splits` given as fractions must sum to at most 1, got {splits!r} (sum {sum(splits)})."
            )
        self.lookback, self.horizon, self.splits = lookback, horizon, splits
        self.batch_size, self.scale, self.stride, self.shuffle, self.num_workers = (
            batch_size,
            scale,
            stride,
            shuffle,
            num_workers,
        )
        self._values = None if values is None else _as_3d(values)
        self._time_feats = None if time_feats is None else np.asarray(time_feats, dtype=np.float32)
        self._edge_index = (
            None if edge_index is None else torch.as_tensor(np.asarray(edge_index), dtype=torch.long)
        )
        self._edge_weight = (
            None if edge_weight is None else torch.as_tensor(np.asarray(edge_weight), dtype=torch.float32)
        )
        self._dates = None if dates is None else pd.DatetimeIndex(dates)
        self._steps_per_day = steps_per_day
        self.history, self.invalid, self.min_observed = history, invalid, float(min_observed)
        #: how messages name the series (subclasses: the file)
        self.source = "`values`"
        #: channels masked by invalid="mask": (node, feature, reason)
        self.masked_channels: list[tuple[int, int, str]] = []
        self.dropped_windows: dict[str, int] = {}
        self.scaler: StandardScaler | None = None
        self.datasets: dict[str, WindowDataset] = {}
        self.borders: dict[str, tuple[int, int]] = {}

    # -- subclasses override -----------------------------------------------------------------------
    def load(self) -> None:
        """Load ``self._values`` (and optionally ``_time_feats``, ``_edge_index``); the base needs ``values``."""
        if self._values is None:
            raise ValueError(
                "TimeSeriesDataModule needs `values` (or use a dataset subclass such as ETTh1DataModule)."
            )

    # -- properties --------------------------------------------------------------------------------
    @property
    def edge_index(self) -> torch.Tensor | None:
        return self._edge_index

    @property
    def edge_weight(self) -> torch.Tensor | None:
        return self._edge_weight

    @property
    def steps_per_day(self) -> int | None:
        """Steps per day of the data: inferred from the timestamps, else the explicit value, else ``None``.

        Raises:
            ValueError: the explicit ``steps_per_day`` disagrees with the timestamps.
        """
        self._ensure_loaded()
        if self._dates is None:
            return self._steps_per_day
        inferred = infer_steps_per_day(self._dates)
        check_steps_per_day(self._steps_per_day, inferred, f"the timestamps of {self.source}")
        return inferred if inferred is not None else self._steps_per_day

    @property
    def num_nodes(self) -> int:
        self._ensure_loaded()
        return int(self._values.shape[1])

    @property
    def num_features(self) -> int:
        self._ensure_loaded()
        return int(self._values.shape[2])

    def _ensure_loaded(self) -> None:
        if self._values is None:
            self.load()
            if self._values is None:
                raise RuntimeError(f"{type(self).__name__}.load() did not set the series.")

    def _row_borders(self, total: int) -> tuple[int, int, int]:
        if all(isinstance(s, float) for s in self.splits):
            n_train = int(round(self.splits[0] * total))
            n_test = int(round(self.splits[2] * total))
            # fractions summing to 1 may round to one row too many: the validation split gives it back
            n_val = min(int(round(self.splits[1] * total)), total - n_train - n_test)
        else:
            n_train, n_val, n_test = (int(s) for s in self.splits)
        if n_train + n_val + n_test > total:
            raise ValueError(
                f"`splits` {self.splits} need {n_train + n_val + n_test} rows but the series has {total}."
            )
        return n_train, n_val, n_test

    def _channel_name(self, node: int, feat: int) -> str:
        names = getattr(self, "columns", None) or getattr(self, "node_names", None)
        label = (
            repr(names[node])
            if names is not None and node < len(names) and self._values.shape[2] == 1
            else None
        )
        return label or f"(node {node}, feature {feat})"

    def _validate(self, values: np.ndarray, n_train: int) -> np.ndarray:
        """Inf values, dead/constant training channels; returns the series with masked entries as NaN."""
        inf = np.isinf(values)
        if inf.any():
            if self.invalid == "raise":
                row, node, feat = (int(i[0]) for i in np.nonzero(inf))
                raise ValueError(
                    f"{self.source} contains {int(inf.sum())} inf value(s), the first at row {row}, channel "
                    f"{self._channel_name(node, feat)}: inf is never a valid observation. Clean the data or pass "
                    "invalid='mask' to treat inf as missing."
                )
            values = np.where(inf, np.nan, values)
        train = values[:n_train]
        counts = np.isfinite(train).sum(axis=0)  # [N, F]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            spread = np.nanmax(train, axis=0) - np.nanmin(train, axis=0)
        problems = [
            (int(n), int(f), "never observed in the training rows") for n, f in zip(*np.nonzero(counts == 0))
        ] + [
            (int(n), int(f), "constant in the training rows")
            for n, f in zip(*np.nonzero((counts > 0) & (spread == 0)))
        ]
        if problems and len(problems) == counts.size:
            raise ValueError(
                f"{self.source}: every channel is never observed or constant in the training rows "
                f"0..{n_train - 1} (all {counts.size}): there is nothing to "
                "learn. Check the file and the `splits`."
            )
        if problems and self.invalid == "raise":
            shown = ", ".join(f"{self._channel_name(n, f)} is {why}" for n, f, why in problems[:5])
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            raise ValueError(
                f"{self.source}: {shown}{more} (training rows 0..{n_train - 1}): such a channel cannot be "
                "scaled or learned. Drop it, or pass invalid='mask' to mask it everywhere."
            )
        if problems:
            values = values.copy()
            for n, f, _ in problems:
                values[:, n, f] = np.nan
        self.masked_channels = problems
        return values

    def _window_starts(
        self, split: str, mask: torch.Tensor, first: int, last: int, stride: int
    ) -> torch.Tensor:
        """Window starts in ``[first, last)`` with enough observed input and target values."""
        t, h = self.lookback, self.horizon
        starts = torch.arange(first, max(last - t - h + 1, first), stride)
        if not len(starts):
            return starts
        per_row = mask.flatten(1).sum(dim=1).double()
        cum = torch.cat([per_row.new_zeros(1), per_row.cumsum(0)])
        width = mask[0].numel()
        frac_x = (cum[starts + t] - cum[starts]) / (t * width)
        frac_y = (cum[starts + t + h] - cum[starts + t]) / (h * width)
        bad = (frac_x <= self.min_observed) | (frac_y <= self.min_observed)
        if bad.any() and self.invalid == "raise":
            i = int(torch.nonzero(bad)[0])
            raise ValueError(
                f"{self.source}: {int(bad.sum())} {split} window(s) have too few observed values, the first "
                f"starting at row {int(starts[i])} ({float(frac_x[i]):.0%} of its input, {float(frac_y[i]):.0%} "
                f"of its target observed; `min_observed`={self.min_observed}). Pass invalid='mask' to drop "
                "such windows."
            )
        self.dropped_windows[split] = int(bad.sum())
        return starts[~bad]

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self._ensure_loaded()
        steps_per_day = self.steps_per_day  # checks an explicit value against the timestamps
        if self._dates is not None and len(self._dates) != self._values.shape[0]:
            raise ValueError(
                f"`dates` has {len(self._dates)} timestamps but {self.source} has {self._values.shape[0]} rows."
            )
        if self._time_feats is None and self._dates is not None:
            self._time_feats = time_features(self._dates)
        del steps_per_day
        values = self._values
        total = values.shape[0]
        n_train, n_val, n_test = self._row_borders(total)
        window = self.lookback + self.horizon
        if n_train < window:
            raise ValueError(
                f"the training split has {n_train} rows, fewer than lookback + horizon = {window}: "
                "shorten the lookback/horizon or enlarge `splits`."
            )
        self.borders = {
            "train": (0, n_train),
            "val": (n_train - self.lookback, n_train + n_val),
            "test": (n_train + n_val - self.lookback, n_train + n_val + n_test),
        }
        values = self._validate(values, n_train)
        observed = np.isfinite(values)
        self.scaler = StandardScaler.fit(values[:n_train]) if self.scale else None
        tensor = torch.as_tensor(values if values.flags.writeable else values.copy())
        if self.scaler is not None:
            tensor = self.scaler.transform(tensor)
        mask = torch.as_tensor(observed)
        tensor = torch.where(mask, tensor, torch.zeros_like(tensor)).contiguous()
        u = None if self._time_feats is None else torch.as_tensor(self._time_feats)
        for split, (a, b) in self.borders.items():
            stride = self.stride if split == "train" else 1
            if split != "train" and b - a < window and (b - a) > self.lookback:
                raise ValueError(
                    f"the {split} split has {b - a - self.lookback} rows, fewer than the horizon {self.horizon}."
                )
            starts = self._window_starts(split, mask, a, b, stride)
            if split == "train" and not len(starts):
                raise ValueError(
                    f"{self.source}: no training window is left: all {self.dropped_windows.get(split, 0)} have too "
                    f"few observed values (`min_observed`={self.min_observed}). Lower `min_observed` or check "
                    "the data."
                )
            self.datasets[split] = WindowDataset(
                tensor, mask, self.lookback, self.horizon, stride, u, history=self.history, starts=starts
            )

    def dataset(self, split: str) -> WindowDataset:
        """The windows of ``"train"``, ``"val"`` or ``"test"``."""
        if split not in ("train", "val", "test"):
            raise ValueError(f"`split` must be one of ['train', 'val', 'test'], got {split!r}.")
        self.setup()
        return self.datasets[split]

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.dataset(split), batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.shuffle)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", False)


class ETTh1DataModule(TimeSeriesDataModule):
    """ETTh1 with the standard LTSF protocol: 12/4/4-month split, z-scores from train, lookback 96.

    For the other ETT files (ETTh2, ETTm1, ETTm2, whose 15-minute split differs) and the other LTSF sets use
    :class:`~lightning_addons.datamodules.LTSFDataModule` / :class:`~lightning_addons.datamodules.ETTDataModule`.

    ``x``/``y`` are ``[B, T, 7, 1]`` (the 7 variables are nodes, multivariate "M" setting) or
    ``[B, T, 1, 1]`` for the target ``OT`` alone (``features="S"``); ``u`` holds (time of day, weekday).

    Args:
        path: local ``ETTh1.csv`` (or its folder); ``None`` downloads it once into the cache.
        lookback: input steps (standard 96).
        horizon: forecast steps (standard 96, 192, 336 or 720; others allowed).
        features: ``"M"`` (all 7 variables) or ``"S"`` (``OT`` only).
        batch_size: batch size.
        stride: training window stride (1 = every window, as the benchmark).
        num_workers: DataLoader workers.

    Raises:
        ValueError: unknown ``features``, non-positive sizes.

    Examples:
        >>> from lightning_addons.data import shared_data_path
        >>> dm = ETTh1DataModule(path=shared_data_path("ETTh1.csv"))
        >>> dm.setup()
        >>> [len(dm.dataset(s)) for s in ("train", "val", "test")]
        [8449, 2785, 2785]
    """

    def __init__(
        self,
        path: str | None = None,
        lookback: int = 96,
        horizon: int = 96,
        features: str = "M",
        batch_size: int = 32,
        stride: int = 1,
        num_workers: int = 0,
    ) -> None:
        if features not in ("M", "S"):
            raise ValueError(f"`features` must be one of ['M', 'S'], got {features!r}.")
        super().__init__(
            None,
            lookback,
            horizon,
            list(ETT_HOURLY_SPLITS),
            batch_size,
            True,
            stride,
            num_workers=num_workers,
        )
        self.path, self.features = path, features

    def load(self) -> None:
        df = load_etth1(self.path)
        cols = [c for c in df.columns if c != "date"] if self.features == "M" else ["OT"]
        self.columns = cols
        self._values = _as_3d(df[cols].to_numpy(dtype=np.float32))
        self._dates = pd.DatetimeIndex(df["date"])
        self.source = f"ETTh1 file {self.path or 'ETTh1.csv (cache)'!s}"


class ChickenpoxDataModule(TimeSeriesDataModule):
    """Weekly chickenpox cases in 20 Hungarian counties (2005-2014) with the county graph.

    ``x``/``y`` are ``[B, T, 20, 1]``; ``edge_index`` ``[2, 102]`` (self-loops included, as published).
    Chronological split 70/10/20 % by default, z-scores from train.

    Args:
        path: local ``chickenpox.json`` (or its folder); ``None`` downloads it once into the cache.
        lookback: input weeks.
        horizon: forecast weeks.
        splits: ``[train, val, test]`` fractions or row counts.
        batch_size: batch size.
        num_workers: DataLoader workers.

    Examples:
        >>> from lightning_addons.data import shared_data_path
        >>> dm = ChickenpoxDataModule(path=shared_data_path("chickenpox.json"), lookback=8, horizon=4)
        >>> dm.setup()
        >>> dm.num_nodes, tuple(dm.edge_index.shape)
        (20, (2, 102))
    """

    def __init__(
        self,
        path: str | None = None,
        lookback: int = 8,
        horizon: int = 4,
        splits: Sequence[float] = (0.7, 0.1, 0.2),
        batch_size: int = 32,
        num_workers: int = 0,
    ) -> None:
        super().__init__(None, lookback, horizon, splits, batch_size, True, 1, num_workers=num_workers)
        self.path = path

    def load(self) -> None:
        values, edge_index, names = load_chickenpox(self.path)
        self.node_names = names
        self._values = _as_3d(values)
        self._edge_index = torch.as_tensor(edge_index)
        # weekly data: weekday of 2005-01-03 (the first Monday); time of day 0
        self._dates = pd.date_range("2005-01-03", periods=values.shape[0], freq="7D")
        self.source = f"chickenpox file {self.path or 'chickenpox.json (cache)'!s}"


class StocksDemoDataModule(TimeSeriesDataModule):
    """Embedded demo (no download): log monthly prices of 9 stocks/indices shipped with matplotlib.

    Companies not yet listed are missing values: they are masked, so metrics ignore them.

    Args:
        lookback: input months.
        horizon: forecast months.
        splits: ``[train, val, test]`` fractions.
        batch_size: batch size.
        log: model log prices.

    Examples:
        >>> dm = StocksDemoDataModule(lookback=24, horizon=6)
        >>> dm.setup()
        >>> dm.num_nodes, bool((~dm.dataset("train")[0]["mask"]).any())
        (9, True)
    """

    def __init__(
        self,
        lookback: int = 24,
        horizon: int = 6,
        splits: Sequence[float] = (0.7, 0.1, 0.2),
        batch_size: int = 32,
        log: bool = True,
    ) -> None:
        super().__init__(None, lookback, horizon, splits, batch_size, True, 1)
        self.log_prices = log

    def load(self) -> None:
        df = load_stocks_demo()
        self.columns = [c for c in df.columns if c != "date"]
        values = df[self.columns].to_numpy(dtype=np.float32)
        self._values = _as_3d(np.log(values) if self.log_prices else values)
        self._dates = pd.DatetimeIndex(df["date"])
        self.source = "matplotlib's Stocks.csv"
