"""LightningDataModules and dataset helpers."""

from lightning_addons.datamodules.digits import DigitsDataModule, IndexedTensorDataset
from lightning_addons.datamodules.graph_signals import GraphSignalDataModule, TrafficGraphDataModule
from lightning_addons.datamodules.ltsf import ETTDataModule, LTSFDataModule
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
    "ETTDataModule",
    "ETTh1DataModule",
    "FewShotGenerator",
    "GraphSignalDataModule",
    "IndexedTensorDataset",
    "LTSFDataModule",
    "StocksDemoDataModule",
    "SyntheticCacheDataModule",
    "TimeSeriesDataModule",
    "TinyUNetGenerator",
    "TrafficGraphDataModule",
]
