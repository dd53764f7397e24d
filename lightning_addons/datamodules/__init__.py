"""LightningDataModules and dataset helpers."""

from lightning_addons.datamodules.digits import DigitsDataModule, IndexedTensorDataset
from lightning_addons.datamodules.synthetic_cache import (
    CacheInitializer,
    DiffusersPipelineGenerator,
    FewShotGenerator,
    SyntheticCacheDataModule,
    TinyUNetGenerator,
)
from lightning_addons.datamodules.timeseries import (
    ChickenpoxDataModule,
    ETTh1DataModule,
    StocksDemoDataModule,
    TimeSeriesDataModule,
)

__all__ = [
    "CacheInitializer",
    "ChickenpoxDataModule",
    "DiffusersPipelineGenerator",
    "DigitsDataModule",
    "ETTh1DataModule",
    "FewShotGenerator",
    "IndexedTensorDataset",
    "StocksDemoDataModule",
    "SyntheticCacheDataModule",
    "TimeSeriesDataModule",
    "TinyUNetGenerator",
]
