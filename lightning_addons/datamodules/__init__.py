"""LightningDataModules and dataset helpers."""

from lightning_addons.datamodules.digits import DigitsDataModule, IndexedTensorDataset
from lightning_addons.datamodules.timeseries import (
    ChickenpoxDataModule,
    ETTh1DataModule,
    StocksDemoDataModule,
    TimeSeriesDataModule,
)

__all__ = [
    "ChickenpoxDataModule",
    "DigitsDataModule",
    "ETTh1DataModule",
    "IndexedTensorDataset",
    "StocksDemoDataModule",
    "TimeSeriesDataModule",
]
