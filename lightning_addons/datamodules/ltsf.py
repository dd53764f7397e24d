"""Long-term forecasting (LTSF) benchmark loaders: the ETT family, Weather, Electricity, Traffic, Exchange, ILI.

Files are the CSVs of the LTSF literature (Informer, Autoformer, PatchTST, iTransformer): a ``date`` column
and one column per variable (target ``OT``). The ETT files download once from their canonical home
(github.com/zhouhaoyi/ETDataset) into :func:`lightning_addons.data.cache_dir`; the other five are only
published inside the Autoformer/Time-Series-Library archive (a Google Drive folder, no stable direct URL),
so they need ``path`` (a file or a folder holding it): the error says where to get them.

Splits follow the reference code: ETT 12/4/4 months (hourly ``ETTh*``: 8,640/2,880/2,880 rows; 15-minute
``ETTm*``: 34,560/11,520/11,520), the others 70 %/10 %/20 % (train ``int(0.7 n)``, test ``int(0.2 n)``,
validation the rest), z-scores fitted on train. Time features and :attr:`steps_per_day` come from the
``date`` column (hourly ETTh1: 24; ETTm1: 96; Weather: 144; ILI, weekly: ``None``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from lightning_addons.data import fetch
from lightning_addons.datamodules.timeseries import ETTH1_SHA256, TimeSeriesDataModule, _as_3d

ETT_URL = "https://raw.githubusercontent.com/zhouhaoyi/ETDataset/main/ETT-small/{}.csv"
AUTOFORMER_ARCHIVE = (
    "the Autoformer / Time-Series-Library dataset archive (github.com/thuml/Autoformer, README 'Get Started': "
    "the Google Drive folder 'all_six_datasets')"
)


@dataclass(frozen=True)
class LTSFSpec:
    """One LTSF dataset: file name, canonical URL (``None``: manual download), sha256, split rule."""

    filename: str
    url: str | None
    sha256: str | None
    split: Literal["ett_hour", "ett_minute", "ratio"]
    columns: int


LTSF_DATASETS: dict[str, LTSFSpec] = {
    "ETTh1": LTSFSpec("ETTh1.csv", ETT_URL.format("ETTh1"), ETTH1_SHA256, "ett_hour", 7),
    "ETTh2": LTSFSpec("ETTh2.csv", ETT_URL.format("ETTh2"), None, "ett_hour", 7),
    "ETTm1": LTSFSpec("ETTm1.csv", ETT_URL.format("ETTm1"), None, "ett_minute", 7),
    "ETTm2": LTSFSpec("ETTm2.csv", ETT_URL.format("ETTm2"), None, "ett_minute", 7),
    "Weather": LTSFSpec("weather.csv", None, None, "ratio", 21),
    "Electricity": LTSFSpec("electricity.csv", None, None, "ratio", 321),
    "Traffic": LTSFSpec("traffic.csv", None, None, "ratio", 862),
    "Exchange": LTSFSpec("exchange_rate.csv", None, None, "ratio", 8),
    "ILI": LTSFSpec("national_illness.csv", None, None, "ratio", 7),
}


def ltsf_splits(name: str, rows: int) -> tuple[int, int, int]:
    """``(train, val, test)`` row counts of the reference code for dataset ``name`` with ``rows`` rows.

    Examples:
        >>> ltsf_splits("ETTh1", 17420), ltsf_splits("ETTm1", 69680), ltsf_splits("ILI", 966)
        ((8640, 2880, 2880), (34560, 11520, 11520), (676, 97, 193))
    """
    spec = _spec(name)
    if spec.split == "ett_hour":
        return 12 * 30 * 24, 4 * 30 * 24, 4 * 30 * 24
    if spec.split == "ett_minute":
        return 12 * 30 * 96, 4 * 30 * 96, 4 * 30 * 96
    train, test = int(rows * 0.7), int(rows * 0.2)
    return train, rows - train - test, test


def _spec(name: str) -> LTSFSpec:
    if name not in LTSF_DATASETS:
        raise ValueError(f"`name` must be one of {list(LTSF_DATASETS)}, got {name!r}.")
    return LTSF_DATASETS[name]


def load_ltsf(name: str, path: str | os.PathLike | None = None) -> pd.DataFrame:
    """One LTSF benchmark as a DataFrame: ``date`` (parsed) and the float variable columns.

    Args:
        name: one of :data:`LTSF_DATASETS` (``"ETTh1"``, ``"ETTh2"``, ``"ETTm1"``, ``"ETTm2"``,
            ``"Weather"``, ``"Electricity"``, ``"Traffic"``, ``"Exchange"``, ``"ILI"``).
        path: the CSV or a folder holding it; ``None`` downloads the ETT files once into the cache.

    Raises:
        ValueError: unknown ``name``; a malformed file (no ``date`` column, unparseable dates,
            non-numeric values, no variable columns), naming the file; no ``path`` for a dataset without
            a direct download.
        FileNotFoundError: ``path`` does not exist.

    Examples:
        >>> from lightning_addons.data import shared_data_path
        >>> df = load_ltsf("ETTh1", shared_data_path("ETTh1.csv"))
        >>> df.shape, list(df.columns[:2])
        ((17420, 8), ['date', 'HUFL'])
    """
    spec = _spec(name)
    if path is None and spec.url is None:
        raise ValueError(
            f"{name} has no direct download: get {spec.filename!r} from {AUTOFORMER_ARCHIVE} and pass "
            f"path='.../{spec.filename}' (or its folder)."
        )
    file = fetch(spec.url or "", spec.filename, local_path=path, sha256=None if path else spec.sha256)
    return read_dated_csv(file)


def read_dated_csv(file: str | os.PathLike) -> pd.DataFrame:
    """Read a CSV with a ``date`` column and numeric variable columns; clear errors on malformed files.

    Examples:
        >>> import io, tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "tiny.csv"
        >>> _ = f.write_text("date,a,OT\\n2020-01-01 00:00,1,2\\n2020-01-01 01:00,3,4\\n")
        >>> read_dated_csv(f).dtypes.astype(str).tolist()
        ['datetime64[us]', 'float32', 'float32']
    """
    try:
        df = pd.read_csv(file)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"malformed file {str(file)!r}: not a readable CSV ({err}).") from err
    if "date" not in df.columns:
        raise ValueError(
            f"malformed file {str(file)!r}: no 'date' column (columns: {list(df.columns)[:8]}); LTSF files have "
            "a 'date' column and one column per variable."
        )
    variables = [c for c in df.columns if c != "date"]
    if not variables:
        raise ValueError(f"malformed file {str(file)!r}: no variable columns besides 'date'.")
    try:
        df["date"] = pd.to_datetime(df["date"])
    except (ValueError, TypeError) as err:
        raise ValueError(f"malformed file {str(file)!r}: unparseable 'date' values ({err}).") from err
    numeric = df[variables].apply(pd.to_numeric, errors="coerce")
    bad = numeric.isna() & df[variables].notna()
    if bad.any().any():
        col = bad.any().idxmax()
        row = int(bad[col].to_numpy().argmax())
        raise ValueError(
            f"malformed file {str(file)!r}: non-numeric value {df[col].iloc[row]!r} in column {col!r}, data row "
            f"{row}."
        )
    df[variables] = numeric.astype(np.float32)
    return df


class LTSFDataModule(TimeSeriesDataModule):
    """Any LTSF benchmark (ETT family, Weather, Electricity, Traffic, Exchange, ILI), reference protocol.

    Variables are nodes: ``x``/``y`` ``[B, T, V, 1]`` for ``features="M"``, ``[B, T, 1, 1]`` for the target
    alone (``"S"``). ``u`` holds (time of day, weekday) from the ``date`` column; :attr:`steps_per_day`
    is inferred from it (an explicit ``steps_per_day`` that disagrees is an error).

    Args:
        name: dataset name (see :data:`LTSF_DATASETS`).
        path: the CSV or a folder holding it; ``None`` downloads (ETT family only) into the cache.
        lookback: input steps (96 in the literature; ILI: 36 or 104).
        horizon: forecast steps (96/192/336/720; ILI: 24/36/48/60).
        features: ``"M"`` (all variables) or ``"S"`` (``target`` only).
        target: the target column for ``"S"``.
        batch_size: batch size.
        stride: training window stride.
        num_workers: DataLoader workers.
        history: ``x_hist`` length (e.g. 168 for a weekly seasonal-naive baseline on hourly data).
        steps_per_day: expected steps per day (checked against the dates); ``None``: from the dates.
        invalid: ``"raise"`` or ``"mask"`` (see :class:`TimeSeriesDataModule`).

    Raises:
        ValueError: unknown name/features, bad sizes; at load time, a malformed file, a missing
            ``target`` column, a disagreeing ``steps_per_day``.

    Examples:
        >>> from lightning_addons.data import shared_data_path
        >>> dm = LTSFDataModule("ETTh1", path=shared_data_path("ETTh1.csv"), history=168)
        >>> dm.setup()
        >>> dm.steps_per_day, [len(dm.dataset(s)) for s in ("train", "val", "test")]
        (24, [8449, 2785, 2785])
        >>> tuple(dm.dataset("test")[0]["x_hist"].shape)
        (168, 7, 1)
    """

    def __init__(
        self,
        name: str = "ETTh1",
        path: str | None = None,
        lookback: int = 96,
        horizon: int = 96,
        features: Literal["M", "S"] = "M",
        target: str = "OT",
        batch_size: int = 32,
        stride: int = 1,
        num_workers: int = 0,
        history: int = 0,
        steps_per_day: int | None = None,
        invalid: Literal["raise", "mask"] = "raise",
    ) -> None:
        _spec(name)
        if features not in ("M", "S"):
            raise ValueError(f"`features` must be one of ['M', 'S'], got {features!r}.")
        super().__init__(
            None,
            lookback,
            horizon,
            [0, 0, 0],  # replaced by the reference split once the row count is known
            batch_size,
            True,
            stride,
            num_workers=num_workers,
            steps_per_day=steps_per_day,
            history=history,
            invalid=invalid,
        )
        self.name, self.path, self.features, self.target = name, path, features, target

    def load(self) -> None:
        df = load_ltsf(self.name, self.path)
        source = self.path or f"{LTSF_DATASETS[self.name].filename} (cache)"
        if self.features == "S" and self.target not in df.columns:
            raise ValueError(
                f"`target`={self.target!r} is not a column of {source!s} (columns: {list(df.columns)[1:9]}...)."
            )
        cols = [c for c in df.columns if c != "date"] if self.features == "M" else [self.target]
        self.columns = cols
        self._values = _as_3d(df[cols].to_numpy(dtype=np.float32))
        self._dates = pd.DatetimeIndex(df["date"])
        self.splits = list(ltsf_splits(self.name, len(df)))
        self.source = f"{self.name} file {source!s}"


class ETTDataModule(LTSFDataModule):
    """The ETT family (``"ETTh1"``, ``"ETTh2"``, ``"ETTm1"``, ``"ETTm2"``): :class:`LTSFDataModule` restricted to it.

    Examples:
        >>> from lightning_addons.data import shared_data_path
        >>> dm = ETTDataModule("ETTh1", path=shared_data_path("ETTh1.csv"), features="S")
        >>> dm.num_nodes, dm.steps_per_day
        (1, 24)
    """

    def __init__(
        self,
        name: Literal["ETTh1", "ETTh2", "ETTm1", "ETTm2"] = "ETTh1",
        path: str | None = None,
        lookback: int = 96,
        horizon: int = 96,
        features: Literal["M", "S"] = "M",
        target: str = "OT",
        batch_size: int = 32,
        stride: int = 1,
        num_workers: int = 0,
        history: int = 0,
        steps_per_day: int | None = None,
        invalid: Literal["raise", "mask"] = "raise",
    ) -> None:
        if name not in ("ETTh1", "ETTh2", "ETTm1", "ETTm2"):
            raise ValueError(f"`name` must be one of ['ETTh1', 'ETTh2', 'ETTm1', 'ETTm2'], got {name!r}.")
        super().__init__(
            name,
            path,
            lookback,
            horizon,
            features,
            target,
            batch_size,
            stride,
            num_workers,
            history,
            steps_per_day,
            invalid,
        )
