"""LightningDataModules and dataset helpers."""

from lightning_addons.datamodules.digits import DigitsDataModule, IndexedTensorDataset
from lightning_addons.datamodules.synthetic_cache import (
    CacheInitializer,
    DiffusersPipelineGenerator,
    FewShotGenerator,
    SyntheticCacheDataModule,
    TinyUNetGenerator,
)

__all__ = [
    "CacheInitializer",
    "DiffusersPipelineGenerator",
    "DigitsDataModule",
    "FewShotGenerator",
    "IndexedTensorDataset",
    "SyntheticCacheDataModule",
    "TinyUNetGenerator",
]
