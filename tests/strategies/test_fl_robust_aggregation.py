"""Robust aggregation: each rule against its definition (numpy/scipy references), the norm guard, strict
dtypes, the finiteness check and FedAvgM under a huge update."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from scipy import stats

from lightning_addons.strategies.aggregation import (
    Aggregator,
    InvalidClientUpdate,
    coordinate_median,
    krum,
    screen_norms,
    trimmed_mean,
)


def _states(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"w": torch.randn(4, 3, generator=g), "b": torch.randn(3, generator=g)} for _ in range(n)]


def _np(states, key):
    return np.stack([s[key].double().numpy() for s in states])


@pytest.mark.parametrize("n", [1, 4, 5])
def test_coordinate_median_equals_numpy_median(n):
    states = _states(n, seed=n)
    out = coordinate_median(states)
    for key in ("w", "b"):
        ref = np.median(_np(states, key), axis=0)
        assert torch.equal(out[key], torch.from_numpy(ref).float())


@pytest.mark.parametrize(("n", "beta"), [(5, 0.2), (10, 0.1), (10, 0.25), (7, 0.0)])
def test_trimmed_mean_equals_scipy_trim_mean(n, beta):
    states = _states(n, seed=n)
    out = trimmed_mean(states, beta)
    for key in ("w", "b"):
        ref = stats.trim_mean(_np(states, key), beta, axis=0)
        torch.testing.assert_close(out[key], torch.from_numpy(ref).float(), rtol=0, atol=1e-7)


def _krum_reference(states, f):
    """Blanchard et al. (2017), written from the definition with numpy."""
    x = np.stack([np.concatenate([s[k].double().numpy().ravel() for k in s]) for s in states])
    n = len(x)
    m = n - f - 2
    scores = []
    for i in range(n):
        d = sorted(float(((x[i] - x[j]) ** 2).sum()) for j in range(n) if j != i)
        scores.append(sum(d[:m]))
    return int(np.argmin(scores))


@pytest.mark.parametrize(("n", "f"), [(5, 1), (7, 2), (10, 1)])
def test_krum_picks_the_state_the_definition_picks(n, f):
    states = _states(n, seed=10 + n)
    states[n // 2] = {k: v * 50 for k, v in states[n // 2].items()}  # an outlier never wins
    chosen, idx = krum(states, f)
    assert idx == _krum_reference(states, f) and idx != n // 2
    assert all(torch.equal(chosen[k], states[idx][k]) for k in chosen)


@pytest.mark.parametrize("select", [3, None])
def test_multi_krum_averages_the_best_scored_states(select):
    n, f = 7, 1
    states = _states(n, seed=3)
    states[2] = {k: v * 50 for k, v in states[2].items()}
    x = np.stack([np.concatenate([s[k].double().numpy().ravel() for k in s]) for s in states])
    scores = []
    for i in range(n):
        d = sorted(float(((x[i] - x[j]) ** 2).sum()) for j in range(n) if j != i)
        scores.append(sum(d[: n - f - 2]))
    m = n - f if select is None else select
    best = np.argsort(scores, kind="stable")[:m]
    out, idx = krum(states, f, select=select)
    assert idx == best[0] and 2 not in best
    for k in ("w", "b"):
        ref = np.mean([states[i][k].double().numpy() for i in best], axis=0)
        torch.testing.assert_close(out[k], torch.from_numpy(ref).float())


def test_norm_bounded_fedavg_clips_every_update_to_the_median_norm():
    g = {"w": torch.zeros(2)}
    ups = [{"w": torch.tensor([3.0, 4.0])}, {"w": torch.tensor([0.0, 1.0])}, {"w": torch.tensor([0.0, 2.0])}]
    out = Aggregator(rule="norm_bounded", max_norm_ratio=None).aggregate(g, ups, [1, 1, 2])
    # norms 5, 1, 2 -> lower median 2 -> the first update is scaled to (1.2, 1.6)
    expected = (torch.tensor([1.2, 1.6]) + torch.tensor([0.0, 1.0]) + 2 * torch.tensor([0.0, 2.0])) / 4
    torch.testing.assert_close(out["w"], expected)
    fixed = Aggregator(rule="norm_bounded", norm_bound=1.0, max_norm_ratio=None).aggregate(g, ups, [1, 1, 2])
    torch.testing.assert_close(fixed["w"], (torch.tensor([0.6, 0.8]) + torch.tensor([0.0, 1.0]) * 3) / 4)


@pytest.mark.parametrize("rule", ["median", "trimmed_mean", "krum"])
def test_robust_rules_apply_to_updates_relative_to_the_global_state(rule):
    states = _states(5)
    g = {k: torch.full_like(v, 0.5) for k, v in states[0].items()}
    out = Aggregator(rule=rule, trim_fraction=0.2, max_norm_ratio=None).aggregate(g, states, [1] * 5)
    deltas = [{k: s[k] - g[k] for k in s} for s in states]
    ref = {
        "median": lambda: coordinate_median(deltas),
        "trimmed_mean": lambda: trimmed_mean(deltas, 0.2),
        "krum": lambda: krum(deltas, 1)[0],
    }[rule]()
    for k in g:
        torch.testing.assert_close(out[k], g[k] + ref[k])


def test_norm_guard_rejects_a_huge_update_and_logs_client_key_and_reason(caplog):
    states = _states(4)
    g = {k: torch.zeros_like(v) for k, v in states[0].items()}
    attack = {k: v * 1e6 for k, v in states[2].items()}
    agg = Aggregator()
    with caplog.at_level(logging.WARNING):
        out = agg.aggregate(
            g, [states[0], states[1], attack, states[3]], [10, 20, 30, 40], client_ids=[7, 8, 9, 10]
        )
    honest = Aggregator(max_norm_ratio=None).aggregate(g, [states[0], states[1], states[3]], [10, 20, 40])
    assert all(torch.equal(out[k], honest[k]) for k in g)
    (rej,) = agg.last_rejections
    assert rej["client"] == 9 and rej["reason"] == "norm_outlier" and "median norm" in rej["detail"]
    assert "client 9, key *: norm_outlier" in caplog.text


def test_norm_guard_can_clip_instead_of_reject():
    g = {"w": torch.zeros(2)}
    ups = [
        {"w": torch.tensor([1.0, 0.0])},
        {"w": torch.tensor([0.0, 1.0])},
        {"w": torch.tensor([300.0, 400.0])},
    ]
    agg = Aggregator(max_norm_ratio=10.0, on_outlier="clip")
    out = agg.aggregate(g, ups, [1, 1, 1])
    # lower median norm 1 -> bound 10 -> (6, 8)
    torch.testing.assert_close(out["w"], torch.tensor([7.0, 9.0]) / 3)
    assert [r["reason"] for r in agg.last_rejections] == ["norm_outlier_clipped"]


def test_screen_norms_flags_non_finite_and_far_norms():
    assert screen_norms([1.0, 2.0, float("inf")], 10.0) == (1.0, [False, False, True])
    assert screen_norms([0.0, 0.0, 5.0], 10.0) == (0.0, [False, False, False])  # median 0: no bound


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64, torch.bfloat16])
def test_updates_of_another_dtype_are_rejected_not_cast(dtype):
    g = {"w": torch.zeros(3)}
    bad = {"w": torch.full((3,), 1e300 if dtype == torch.float64 else 1.0, dtype=dtype)}
    with pytest.raises(
        InvalidClientUpdate, match=rf"client 1 .*'w'.* dtype {dtype}, expected torch.float32"
    ) as err:
        Aggregator().aggregate(g, [{"w": torch.ones(3)}, bad], [1, 1])
    assert (err.value.client, err.value.key, err.value.reason) == (1, "w", "dtype")


def test_a_non_finite_aggregate_keeps_the_previous_global_state(caplog):
    g = {"w": torch.tensor([1.0])}
    agg = Aggregator(server_optimizer="fedavgm", server_momentum=0.9, max_norm_ratio=None)
    big = {"w": torch.tensor([-3e38])}
    first = agg.aggregate(g, [big], [1])  # g = 3e38 -> x = 1 - 3e38 (finite)
    assert torch.isfinite(first["w"]).all()
    m_before = agg.server.m["w"].clone()
    with caplog.at_level(logging.WARNING):
        second = agg.aggregate(first, [big], [1])  # m = 0.9 * 3e38 + ~0 -> x overflows float32
    assert torch.equal(second["w"], first["w"])
    assert torch.equal(agg.server.m["w"], m_before)  # the momentum of the discarded step is rolled back
    assert [r["reason"] for r in agg.last_rejections] == ["non_finite_aggregate"]
    assert "previous global state is kept" in caplog.text


def test_fedavgm_never_reaches_nan_when_one_client_sends_a_huge_update():
    states = _states(5)
    g = {k: torch.zeros_like(v) for k, v in states[0].items()}
    for guard in (10.0, None):
        agg = Aggregator(server_optimizer="fedavgm", server_momentum=0.9, max_norm_ratio=guard)
        x = g
        for _ in range(6):
            ups = [{k: x[k] + (s[k] - g[k]) * 0.01 for k in s} for s in states]
            ups[0] = {k: x[k] + v * 1e37 for k, v in states[0].items()}
            x = agg.aggregate(x, ups, [1] * 5)
            assert all(torch.isfinite(v).all() for v in x.values())
        if guard is not None:
            assert float(max(v.abs().max() for v in x.values())) < 1.0  # the attacker never got in


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"rule": "mean"},
            r"`rule` must be one of \['fedavg', 'median', 'trimmed_mean', 'krum', 'norm_bounded'\], got 'mean'",
        ),
        ({"trim_fraction": 0.5}, r"`trim_fraction` must be in \[0, 0.5\), got 0.5"),
        ({"krum_byzantine": -1}, r"`krum_byzantine` must be an integer >= 0, got -1"),
        ({"krum_select": 0}, r"`krum_select` must be an integer >= 1 or None, got 0"),
        ({"norm_bound": 0.0}, r"`norm_bound` must be > 0 or None, got 0.0"),
        ({"max_norm_ratio": 0.5}, r"`max_norm_ratio` must be a finite number >= 1 or None, got 0.5"),
        ({"on_outlier": "keep"}, r"`on_outlier` must be one of \['reject', 'clip'\], got 'keep'"),
    ],
)
def test_bad_robust_aggregation_arguments_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Aggregator(**kwargs)
