"""The consensus rule counts independent witnesses: filters that are copies of one signal are one filter."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lightning_addons.callbacks import GMMFilterAuditor
from lightning_addons.gmm import audit_layer, consensus, effective_filters


def copies_of_one_signal(n: int, c: int, seed: int) -> torch.Tensor:
    """Maps ``[n, c, 2, 2]`` where every filter follows one heavy-tailed per-sample level (Student-t, 3 dof),
    as VGG's last blocks do at 32x32 input: a fixed 2x2 pattern per filter, a small second signal and noise."""
    g = torch.Generator().manual_seed(seed)
    level = _student_t(n, 3, g)
    second = torch.randn(n, generator=g)
    a, b = torch.randn(c, 4, generator=g), torch.randn(c, 4, generator=g)
    maps = (
        level[:, None, None] * a + 0.1 * second[:, None, None] * b + 0.01 * torch.randn(n, c, 4, generator=g)
    )
    return maps.reshape(n, c, 2, 2).float()


def _student_t(n: int, dof: int, g: torch.Generator) -> torch.Tensor:
    z = torch.randn(n, generator=g)
    chi2 = torch.randn(n, dof, generator=g).pow(2).sum(-1)
    return z / (chi2 / dof).sqrt()


def _without_signals(ri, **kwargs):  # the same rule with the independent-filters null of before
    return consensus(dataclasses.replace(ri, signals=None), **kwargs)[:3]


def test_effective_filters_counts_copies_as_one_and_independent_filters_as_many():
    g = torch.Generator().manual_seed(0)
    zero = torch.zeros(1, 400, 1, dtype=torch.float64)

    def unit(x):  # a 1-D signal holding all of a filter's variance (share 1)
        x = x - x.mean()
        return torch.cat([x / x.pow(2).mean().sqrt(), zero], -1)

    one = unit(torch.randn(1, 400, 1, generator=g, dtype=torch.float64))
    other = unit(torch.randn(1, 400, 1, generator=g, dtype=torch.float64))
    signs = torch.randint(0, 2, (30, 1, 1), generator=g).double() * 2 - 1
    assert effective_filters(one * signs) == pytest.approx(1.0, abs=0.01)  # copies (any sign): one signal
    # independent filters whose 2-D panels hold all their variance (share 1): about C
    assert effective_filters(torch.randn(30, 400, 2, generator=g) / 2**0.5) > 25
    two = torch.cat([one.expand(15, 400, 2), other.expand(15, 400, 2)])
    assert effective_filters(two) == pytest.approx(2.0, rel=0.1)  # two groups of copies


@pytest.mark.stochastic
def test_copies_of_one_heavy_tailed_signal_raise_no_consensus(seed_offset):
    maps = copies_of_one_signal(256, 48, seed=seed_offset)
    before = audit_layer(maps, rule=_without_signals, seed=seed_offset)
    assert int(before.anomaly.sum()) >= 10  # the independent-filters null: a false alarm on the tail
    res = audit_layer(maps, seed=seed_offset)
    assert res.effective_filters < 1.5
    assert not res.anomaly.any() and not res.flagged.any()
    assert "1 independent signal" in res.inconclusive


def test_the_auditor_lists_a_layer_of_copies_in_one_warning():
    auditor = GMMFilterAuditor(max_samples=256, figures="none", save_tables=False)
    with pytest.warns(
        UserWarning, match=r"cannot reach a consensus\): copies: its 48 live filters carry about 1"
    ):
        r = auditor.audit_maps({"copies": copies_of_one_signal(256, 48, seed=0)})
    assert list(r["skipped_layers"]) == ["copies"] and r["outlier_samples"] == 0
    assert r["layers"]["copies"]["effective_filters"] < 1.5


@pytest.mark.stochastic
def test_outliers_seen_by_independent_filters_are_still_flagged(seed_offset):
    g = torch.Generator().manual_seed(100 + seed_offset)
    n, c = 240, 24
    maps = torch.randn(n, c, 3, 3, generator=g)
    # six samples 8 sigma out in every filter (a different direction per filter); outliers that hold most of
    # a layer's variance would make its filters look like copies of one signal (a limit, see docs/gmm.md)
    shift = torch.randn(c, 9, generator=g)
    maps[-6:] += (8.0 * shift / shift.norm(dim=1, keepdim=True)).reshape(1, c, 3, 3)
    res = audit_layer(maps, seed=seed_offset)
    assert res.effective_filters > 0.5 * c and res.inconclusive is None
    flagged = (res.flagged & res.anomaly[:, None]).any(0)
    assert flagged.nonzero().flatten().tolist() == list(range(n - 6, n))
