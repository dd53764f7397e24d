"""scikit-learn's digits (1,797 8x8 images, shipped with scikit-learn: no download) as a LightningDataModule."""

from __future__ import annotations

from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from lightning_addons.data import digits_split_indices, load_digits_arrays
from lightning_addons.datamodules.corruptions import (
    domain_shift,
    inject_outliers,
    label_noise,
    validate_corruptions,
)

SPLITS = ("train", "val", "test", "public")


class IndexedTensorDataset(Dataset):
    """Images and labels held as tensors, with per-sample provenance.

    Attributes:
        x, y: images ``[N, C, H, W]`` and (possibly corrupted) labels ``[N]``.
        clean_y: the original labels.
        source_index: index of each sample in ``sklearn.datasets.load_digits()``.
        is_outlier: injected outlier (inverted copy with a wrong label).
        is_noisy: label changed by label noise.
        return_index: when True, ``__getitem__`` returns ``(x, y, index)`` so samples can be traced.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        source_index: torch.Tensor,
        clean_y: torch.Tensor | None = None,
        is_outlier: torch.Tensor | None = None,
        is_noisy: torch.Tensor | None = None,
        return_index: bool = False,
    ) -> None:
        n = len(x)
        self.x, self.y = x, y
        self.source_index = source_index
        self.clean_y = y.clone() if clean_y is None else clean_y
        self.is_outlier = torch.zeros(n, dtype=torch.bool) if is_outlier is None else is_outlier
        self.is_noisy = torch.zeros(n, dtype=torch.bool) if is_noisy is None else is_noisy
        self.return_index = return_index

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        if self.return_index:
            return self.x[i], self.y[i], i
        return self.x[i], self.y[i]

    @property
    def targets(self) -> torch.Tensor:
        return self.y


def _check_fraction(name: str, value: float, low_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and (0.0 < value < 1.0 if low_open else 0.0 <= value < 1.0)
    if not ok:
        interval = "(0, 1)" if low_open else "[0, 1)"
        raise ValueError(f"`{name}` must be a fraction in {interval}, got {value!r}.")


class DigitsDataModule(pl.LightningDataModule):
    """scikit-learn's handwritten digits with seeded stratified splits and optional corruptions.

    The data set is first split (stratified, seeded) into a *public* part of ``public_fraction``
    (server-side data, e.g. for pre-training) and a *private* part, which is split into train/val/test.
    Corruptions apply to the private part only: ``label_noise`` and ``outliers`` to the training split,
    ``domain_shift`` to train, val and test.

    Args:
        batch_size: batch size of every loader.
        val_fraction, test_fraction: fractions of the private part for validation and test.
        public_fraction: fraction of the whole data set held out as the public split (0 for none).
        resize: output side length (bilinear), ``None`` keeps 8x8.
        channels: 1 or 3 (the grey image repeated).
        normalize: standardise with the clean training split's mean and std (else intensities in [0, 1]).
        corruptions: ``{"label_noise": frac, "outliers": frac, "domain_shift": True | {gain, offset,
            noise_std, roll, rotation}}``. Outliers are ``round(frac * n_train)`` inverted copies of
            training images with wrong labels, appended to the training split.
        return_indices: batches are ``(x, y, index)``; ``index`` is the position in ``dataset(split)``.
        num_workers, pin_memory: passed to the loaders.
        seed: seed of the splits and corruptions.

    Raises:
        ValueError: fractions outside their range, splits that leave fewer samples than classes,
            unknown corruption names, ``channels`` not 1 or 3.

    Examples:
        >>> dm = DigitsDataModule(resize=32, corruptions={"outliers": 0.05}, return_indices=True)
        >>> dm.setup("fit")
        >>> x, y, idx = next(iter(dm.train_dataloader()))
        >>> tuple(x.shape[1:]), int(dm.dataset("train").is_outlier.sum())
        ((1, 32, 32), 63)
    """

    num_classes = 10

    def __init__(
        self,
        batch_size: int = 64,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        public_fraction: float = 0.0,
        resize: int | None = None,
        channels: Literal[1, 3] = 1,
        normalize: bool = True,
        corruptions: dict[str, Any] | None = None,
        return_indices: bool = False,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
        _check_fraction("val_fraction", val_fraction, low_open=True)
        _check_fraction("test_fraction", test_fraction, low_open=True)
        _check_fraction("public_fraction", public_fraction)
        if val_fraction + test_fraction >= 1.0:
            raise ValueError(
                f"`val_fraction` + `test_fraction` must be < 1 to leave a training split, got "
                f"{val_fraction} + {test_fraction} = {val_fraction + test_fraction}."
            )
        if channels not in (1, 3):
            raise ValueError(f"`channels` must be 1 or 3, got {channels!r}.")
        if resize is not None and (not isinstance(resize, int) or resize < 1):
            raise ValueError(f"`resize` must be a positive integer or None, got {resize!r}.")
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"`num_workers` must be a non-negative integer, got {num_workers!r}.")
        self.corruptions = validate_corruptions(corruptions)
        self.batch_size = batch_size
        self.val_fraction, self.test_fraction, self.public_fraction = (
            val_fraction,
            test_fraction,
            public_fraction,
        )
        self.resize, self.channels, self.normalize = resize, channels, normalize
        self.return_indices = return_indices
        self.num_workers, self.pin_memory, self.seed = num_workers, pin_memory, seed
        self._datasets: dict[str, IndexedTensorDataset] = {}
        self._check_sizes()
        self.save_hyperparameters()

    # ------------------------------------------------------------------ sizes
    @staticmethod
    def _raw() -> tuple[np.ndarray, np.ndarray]:
        return load_digits_arrays()

    def _check_sizes(self) -> None:
        n = 1797
        n_public = int(round(self.public_fraction * n))
        n_private = n - n_public
        sizes = {
            "public": n_public,
            "val": int(round(self.val_fraction * n_private)),
            "test": int(round(self.test_fraction * n_private)),
        }
        sizes["train"] = n_private - sizes["val"] - sizes["test"]
        for split, size in sizes.items():
            if split == "public" and self.public_fraction == 0:
                continue
            if size < self.num_classes:
                raise ValueError(
                    f"The {split!r} split would hold {size} samples, fewer than the {self.num_classes} classes "
                    f"needed for a stratified split: adjust `val_fraction`={self.val_fraction}, "
                    f"`test_fraction`={self.test_fraction}, `public_fraction`={self.public_fraction}."
                )

    # ------------------------------------------------------------------ build
    def _split_indices(self, y: np.ndarray) -> dict[str, np.ndarray]:
        return digits_split_indices(y, self.val_fraction, self.test_fraction, self.public_fraction, self.seed)

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        if self.resize is not None and self.resize != x.shape[-1]:
            x = F.interpolate(x, size=(self.resize, self.resize), mode="bilinear", align_corners=False)
        if self.normalize:
            x = (x - self._mean) / self._std
        if self.channels == 3:
            x = x.repeat(1, 3, 1, 1)
        return x.contiguous()

    def _build(self) -> None:
        images, targets = self._raw()
        split_idx = self._split_indices(targets)
        g = torch.Generator().manual_seed(self.seed)
        x_all = torch.from_numpy(images).unsqueeze(1)
        y_all = torch.from_numpy(targets)
        train = x_all[split_idx["train"]]
        self._mean = float(train.mean())
        self._std = float(train.std())
        shift = self.corruptions.get("domain_shift")
        for split, idx in split_idx.items():
            idx_t = torch.from_numpy(idx)
            x, y = x_all[idx_t], y_all[idx_t]
            clean_y = y.clone()
            is_noisy = torch.zeros(len(y), dtype=torch.bool)
            is_outlier = torch.zeros(len(y), dtype=torch.bool)
            if split == "train":
                if self.corruptions.get("label_noise", 0) > 0:
                    y, is_noisy = label_noise(y, self.corruptions["label_noise"], self.num_classes, g)
                if self.corruptions.get("outliers", 0) > 0:
                    ox, oy, src = inject_outliers(
                        x, clean_y, self.corruptions["outliers"], self.num_classes, g
                    )
                    x = torch.cat([x, ox])
                    y = torch.cat([y, oy])
                    clean_y = torch.cat([clean_y, clean_y[src]])
                    idx_t = torch.cat([idx_t, idx_t[src]])
                    is_noisy = torch.cat([is_noisy, torch.zeros(len(src), dtype=torch.bool)])
                    is_outlier = torch.cat([is_outlier, torch.ones(len(src), dtype=torch.bool)])
            if shift is not None and split != "public":
                x = domain_shift(x, shift, g)
            self._datasets[split] = IndexedTensorDataset(
                self._finish(x), y, idx_t, clean_y, is_outlier, is_noisy, self.return_indices
            )

    def prepare_data(self) -> None:  # digits ship with scikit-learn: nothing to download
        pass

    def setup(self, stage: str | None = None) -> None:
        if not self._datasets:
            self._build()

    def dataset(self, split: Literal["train", "val", "test", "public"]) -> IndexedTensorDataset:
        """The tensor dataset of a split (builds the data on first use)."""
        if split not in SPLITS:
            raise ValueError(f"`split` must be one of {list(SPLITS)}, got {split!r}.")
        self.setup()
        if split not in self._datasets:
            raise ValueError("There is no 'public' split: set `public_fraction` > 0.")
        return self._datasets[split]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        side = self.resize or 8
        return (self.channels, side, side)

    # ------------------------------------------------------------------ loaders
    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.dataset(split),
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(self.seed) if shuffle else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def public_dataloader(self, shuffle: bool = False) -> DataLoader:
        return self._loader("public", shuffle=shuffle)
