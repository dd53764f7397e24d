"""DigitsDataModule: splits, shapes, corruptions that do what they say, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_addons.datamodules import DigitsDataModule
from lightning_addons.datamodules.corruptions import domain_shift, inject_outliers, label_noise


def _build(**kw) -> DigitsDataModule:
    dm = DigitsDataModule(**kw)
    dm.setup("fit")
    return dm


def test_splits_are_disjoint_stratified_and_cover_the_data():
    dm = _build(public_fraction=0.3)
    parts = {s: dm.dataset(s).source_index.numpy() for s in ("train", "val", "test", "public")}
    allidx = np.concatenate(list(parts.values()))
    assert len(allidx) == 1797 and len(np.unique(allidx)) == 1797
    assert len(parts["public"]) == round(0.3 * 1797)
    for split in parts:
        counts = np.bincount(dm.dataset(split).y.numpy(), minlength=10)
        share = counts / counts.sum()
        assert np.all(np.abs(share - 0.1) < 0.02), (split, share)


def test_same_seed_same_splits_other_seed_other_splits():
    a, b, c = _build(seed=1), _build(seed=1), _build(seed=2)
    assert torch.equal(a.dataset("train").source_index, b.dataset("train").source_index)
    assert not torch.equal(a.dataset("train").source_index, c.dataset("train").source_index)


@pytest.mark.parametrize("resize,channels", [(None, 1), (32, 1), (32, 3), (16, 3)])
def test_resize_and_channels(resize, channels):
    dm = _build(resize=resize, channels=channels, batch_size=7)
    x, y = next(iter(dm.train_dataloader()))
    side = resize or 8
    assert x.shape == (7, channels, side, side) and y.dtype == torch.int64
    assert dm.input_shape == (channels, side, side)


def test_normalize_standardises_the_training_split():
    x = _build(normalize=True).dataset("train").x
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-3
    raw = _build(normalize=False).dataset("train").x
    assert float(raw.min()) >= 0 and float(raw.max()) <= 1


def test_label_noise_changes_exactly_the_requested_fraction():
    dm = _build(corruptions={"label_noise": 0.2})
    ds = dm.dataset("train")
    changed = ds.y != ds.clean_y
    assert int(changed.sum()) == round(0.2 * len(ds)) == int(ds.is_noisy.sum())
    assert torch.equal(changed, ds.is_noisy)
    assert not (dm.dataset("val").y != dm.dataset("val").clean_y).any()


def test_outliers_are_inverted_copies_with_wrong_labels():
    clean = _build(normalize=False)
    dm = _build(normalize=False, corruptions={"outliers": 0.05}, return_indices=True)
    ds, n_clean = dm.dataset("train"), len(clean.dataset("train"))
    n_out = round(0.05 * n_clean)
    assert len(ds) == n_clean + n_out and int(ds.is_outlier.sum()) == n_out
    assert ds.is_outlier[n_clean:].all() and not ds.is_outlier[:n_clean].any()
    out = ds.is_outlier
    assert (ds.y[out] != ds.clean_y[out]).all()
    # Each outlier is 1 - (its source image).
    by_source = {int(s): i for i, s in enumerate(clean.dataset("train").source_index)}
    for i in torch.nonzero(out).flatten()[:10]:
        src = clean.dataset("train").x[by_source[int(ds.source_index[i])]]
        assert torch.allclose(ds.x[i], 1 - src)


def test_return_indices_traces_samples():
    dm = _build(corruptions={"outliers": 0.05}, return_indices=True, batch_size=16)
    x, y, idx = next(iter(dm.train_dataloader()))
    ds = dm.dataset("train")
    assert torch.equal(ds.x[idx], x) and torch.equal(ds.y[idx], y)


@pytest.mark.stochastic
def test_domain_shift_statistics_match_the_spec(seed_offset):
    g = torch.Generator().manual_seed(seed_offset)
    x = torch.rand(4000, 1, 8, 8, generator=g)
    spec = {"gain": 0.5, "offset": 0.2, "noise_std": 0.1}
    out = domain_shift(x, spec, g)
    resid = out - (0.5 * x + 0.2)
    assert abs(float(resid.mean())) < 3e-3 and abs(float(resid.std()) - 0.1) < 3e-3
    assert abs(float(out.mean()) - (0.5 * float(x.mean()) + 0.2)) < 3e-3


def test_domain_shift_roll_moves_every_image_by_one_pixel():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(50, 1, 8, 8)
    out = domain_shift(x, {"roll": 1}, g)
    for a, b in zip(x, out):
        candidates = [torch.roll(a, s, d) for s in (-1, 1) for d in (-1, -2)]
        assert any(torch.equal(b, c) for c in candidates)


def test_domain_shift_applies_to_private_splits_only():
    dm = _build(normalize=False, public_fraction=0.3, corruptions={"domain_shift": {"offset": 0.5}})
    ref = _build(normalize=False, public_fraction=0.3)
    assert torch.allclose(dm.dataset("public").x, ref.dataset("public").x)
    assert torch.allclose(dm.dataset("test").x, ref.dataset("test").x + 0.5)


def test_rotation_keeps_shape():
    g = torch.Generator().manual_seed(0)
    out = domain_shift(torch.rand(5, 1, 8, 8), {"rotation": 15}, g)
    assert out.shape == (5, 1, 8, 8)


def test_pure_corruption_functions_are_deterministic():
    y = torch.arange(10).repeat(20)
    a = label_noise(y, 0.3, 10, torch.Generator().manual_seed(3))
    b = label_noise(y, 0.3, 10, torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0])
    x = torch.rand(100, 1, 8, 8)
    ox, oy, src = inject_outliers(x, y[:100], 0.1, 10, torch.Generator().manual_seed(0))
    assert len(ox) == 10 and (oy != y[:100][src]).all()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"corruptions": {"blur": 0.1}}, r"Unknown corruption name\(s\) \['blur'\].*allowed names"),
        ({"corruptions": {"label_noise": 1.5}}, r"`label_noise` must be a fraction in \[0, 1\], got 1.5"),
        ({"corruptions": {"outliers": -0.1}}, r"`outliers` must be a fraction in \[0, 1\], got -0.1"),
        ({"corruptions": {"domain_shift": {"hue": 1}}}, r"Unknown domain_shift keys \['hue'\]"),
        ({"corruptions": {"domain_shift": {"noise_std": -1}}}, r"noise_std.*>= 0"),
        ({"val_fraction": 0.6, "test_fraction": 0.5}, r"`val_fraction` \+ `test_fraction` must be < 1"),
        ({"val_fraction": 0.0}, r"`val_fraction` must be a fraction in \(0, 1\), got 0.0"),
        ({"test_fraction": 1.2}, r"`test_fraction` must be a fraction in \(0, 1\)"),
        ({"public_fraction": 1.0}, r"`public_fraction` must be a fraction in \[0, 1\)"),
        ({"public_fraction": 0.001}, r"'public' split would hold 2 samples"),
        ({"val_fraction": 0.004}, r"'val' split would hold \d samples"),
        ({"channels": 2}, r"`channels` must be 1 or 3, got 2"),
        ({"resize": 0}, r"`resize` must be a positive integer or None, got 0"),
        ({"batch_size": 0}, r"`batch_size` must be a positive integer, got 0"),
    ],
)
def test_bad_input_is_rejected_with_a_clear_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DigitsDataModule(**kwargs)


def test_missing_public_split_is_explained():
    with pytest.raises(ValueError, match="set `public_fraction` > 0"):
        _build().dataset("public")
    with pytest.raises(ValueError, match=r"`split` must be one of"):
        _build().dataset("holdout")
