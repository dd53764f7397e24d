"""LightningDataModules and dataset helpers."""

from lightning_addons.datamodules.digits import DigitsDataModule, IndexedTensorDataset

__all__ = ["DigitsDataModule", "IndexedTensorDataset"]
