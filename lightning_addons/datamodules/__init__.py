"""LightningDataModules and dataset helpers. Names load lazily (PEP 562)."""

from __future__ import annotations

from lightning_addons._lazy import lazy_exports

_EXPORTS = {
    "DigitsDataModule": "lightning_addons.datamodules.digits",
    "IndexedTensorDataset": "lightning_addons.datamodules.digits",
    "CacheInitializer": "lightning_addons.datamodules.synthetic_cache",
    "DiffusersPipelineGenerator": "lightning_addons.datamodules.synthetic_cache",
    "FewShotGenerator": "lightning_addons.datamodules.synthetic_cache",
    "SyntheticCacheDataModule": "lightning_addons.datamodules.synthetic_cache",
    "TinyUNetGenerator": "lightning_addons.datamodules.synthetic_cache",
    "ChickenpoxDataModule": "lightning_addons.datamodules.timeseries",
    "ETTh1DataModule": "lightning_addons.datamodules.timeseries",
    "StocksDemoDataModule": "lightning_addons.datamodules.timeseries",
    "TimeSeriesDataModule": "lightning_addons.datamodules.timeseries",
    "GraphSignalDataModule": "lightning_addons.datamodules.graph_signals",
    "TrafficGraphDataModule": "lightning_addons.datamodules.graph_signals",
    "ETTDataModule": "lightning_addons.datamodules.ltsf",
    "LTSFDataModule": "lightning_addons.datamodules.ltsf",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
