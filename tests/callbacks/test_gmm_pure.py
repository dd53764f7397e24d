"""The pure maths of the GMM audit on constructed data where the answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score, calinski_harabasz_score

from lightning_addons.gmm import (
    RuleInput,
    audit_layer,
    audit_layers,
    calinski_harabasz,
    ch_outlier,
    dead_filters,
    filter_matrix,
    fit_gmm_sklearn,
    fit_gmm_torch,
    fit_gmm_torch_many,
    likelihood,
    normalise_scale,
    project_2d,
    sample_votes,
    small_component,
)
from lightning_addons.gmm.audit import validate_components


def blobs(sizes, centres, scale=1.0, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    parts = [
        torch.randn(n, 2, generator=g, dtype=torch.float64) * scale + torch.tensor(c, dtype=torch.float64)
        for n, c in zip(sizes, centres)
    ]
    return torch.cat(parts)


def maps_from_points(points: torch.Tensor, hw: int = 4, seed: int = 0) -> torch.Tensor:
    """Embed 2-D points [C, N, 2] into feature maps [N, C, hw, hw] through a random linear map (rank 2)."""
    g = torch.Generator().manual_seed(seed)
    c, n, _ = points.shape
    proj = torch.randn(c, 2, hw * hw, generator=g, dtype=torch.float64)
    return (points @ proj).float().transpose(0, 1).reshape(n, c, hw, hw)


def test_filter_matrix_shapes_and_rejects_non_image_maps():
    maps = torch.randn(10, 3, 4, 5)
    assert filter_matrix(maps).shape == (3, 10, 20)
    assert torch.equal(filter_matrix(maps)[1, 2], maps[2, 1].flatten())
    with pytest.raises(ValueError, match=r"Feature maps must be \[N, C, H, W\]"):
        filter_matrix(torch.randn(10, 3, 4))


@pytest.mark.parametrize("method", ["qr", "gram"])
def test_pca_scores_match_sklearn_up_to_sign(method):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 200, 3, generator=g, dtype=torch.float64) @ torch.randn(
        4, 3, 60, generator=g, dtype=torch.float64
    )
    x = x + 0.01 * torch.randn(4, 200, 60, generator=g, dtype=torch.float64)
    ours = project_2d(x, method=method)
    for b in range(4):
        ref = PCA(2).fit_transform(x[b].numpy())
        np.testing.assert_allclose(np.abs(ours[b].numpy()), np.abs(ref), rtol=1e-6, atol=1e-6)
    scaled = normalise_scale(ours)
    assert torch.allclose(scaled.pow(2).sum(-1).mean(-1), torch.ones(4, dtype=torch.float64))


def test_gram_pca_handles_rank_deficient_maps_and_rejects_unknown_methods():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 100, 1, generator=g, dtype=torch.float64) @ torch.randn(
        3, 1, 40, generator=g, dtype=torch.float64
    )
    ours = project_2d(x, method="gram")  # rank 1: the second component is zero, nothing is NaN
    for b in range(3):
        ref = PCA(1).fit_transform(x[b].numpy())
        np.testing.assert_allclose(np.abs(ours[b, :, 0].numpy()), np.abs(ref[:, 0]), rtol=1e-6, atol=1e-6)
    assert torch.isfinite(ours).all() and float(ours[..., 1].abs().max()) < 1e-6
    with pytest.raises(ValueError, match=r"`method` must be one of \['auto', 'qr', 'gram'\], got 'svd'"):
        project_2d(x, method="svd")


def test_calinski_harabasz_matches_sklearn_and_guards_collapsed_fits():
    pts = blobs([50, 40, 30], [(0, 0), (5, 0), (0, 5)])[None]
    labels = torch.tensor([0] * 50 + [1] * 40 + [2] * 30)[None]
    ours = float(calinski_harabasz(pts, labels, 3)[0])
    assert ours == pytest.approx(calinski_harabasz_score(pts[0].numpy(), labels[0].numpy()), rel=1e-10)
    one_cluster = torch.zeros(1, 120, dtype=torch.long)
    assert float(calinski_harabasz(pts, one_cluster, 3)[0]) == 0.0
    identical = torch.zeros(1, 120, 2, dtype=torch.float64)
    identical[:, 60:] = 1.0
    halves = torch.tensor([0] * 60 + [1] * 60)[None]
    assert float(calinski_harabasz(identical, halves, 2)[0]) == 0.0  # zero within-cluster dispersion


@pytest.mark.stochastic
def test_torch_em_matches_sklearn_on_separated_blobs(seed_offset):
    pts = torch.stack([blobs([80, 50, 20], [(0, 0), (6, 0), (0, 6)], seed=s + seed_offset) for s in range(5)])
    ours, ref = fit_gmm_torch(pts, 3, seed=seed_offset), fit_gmm_sklearn(pts, 3, seed=seed_offset)
    for b in range(5):
        assert adjusted_rand_score(ours.labels[b].numpy(), ref.labels[b].numpy()) == pytest.approx(1.0)
        np.testing.assert_allclose(
            np.sort(ours.weights[b].numpy()), np.sort(ref.weights[b].numpy()), atol=1e-3
        )
    np.testing.assert_allclose(ours.log_prob.numpy(), ref.log_prob.numpy(), rtol=1e-3, atol=1e-3)
    assert bool(ours.converged.all())


@pytest.mark.stochastic
def test_torch_backend_agrees_with_sklearn_on_k_and_ch(seed_offset):
    """Same K chosen and CH within 1% on random mixtures of 2-4 blobs with fixed seeds."""
    g = torch.Generator().manual_seed(1 + seed_offset)
    clouds = []
    for i in range(24):
        k = 2 + i % 3
        centres = (torch.randn(k, 2, generator=g) * 4).tolist()
        sizes = [int(s) for s in torch.randint(30, 90, (k,), generator=g)]
        clouds.append(blobs(sizes, centres, seed=100 + i + seed_offset)[:120])
    c = len(clouds)
    n = min(len(p) for p in clouds)
    pts = torch.stack([p[:n] for p in clouds])
    maps = maps_from_points(pts, seed=seed_offset)
    a_t = audit_layer(maps, backend="torch", seed=seed_offset)
    a_s = audit_layer(maps, backend="sklearn", seed=seed_offset)
    same_k = a_t.k == a_s.k
    # near-tied CH values make the two EMs pick different K on ~9% of clouds (0-4 of 24 at offsets 0-11);
    # 0.7 (at most 7 of 24) fails ~0.5% of seeds (Poisson tail of that rate)
    assert same_k.float().mean() >= 0.7, (a_t.k, a_s.k)
    rel = ((a_t.ch - a_s.ch).abs() / a_s.ch.clamp_min(1e-9))[same_k]
    assert float(rel.median()) < 0.01 and float((rel < 0.05).float().mean()) >= 0.8
    assert c == len(a_t.k)


def test_sklearn_backend_gives_the_same_fits_with_parallel_workers():
    pts = torch.stack([blobs([60, 40], [(0, 0), (5, 5)], seed=s) for s in range(3)])
    from joblib import parallel_backend

    with parallel_backend("threading"):  # the code path of n_jobs > 1 without paying process start-up in CI
        two = fit_gmm_sklearn(pts, 2, n_jobs=2)
    one = fit_gmm_sklearn(pts, 2, n_jobs=1)
    assert torch.equal(one.labels, two.labels) and torch.allclose(one.log_prob, two.log_prob)


@pytest.mark.stochastic
def test_k_chosen_by_ch_and_by_bic_on_three_blobs(seed_offset):
    pts = blobs([60, 60, 60], [(0, 0), (8, 0), (4, 7)], seed=seed_offset)[None]
    for criterion in ("ch", "bic"):
        maps = maps_from_points(pts, seed=seed_offset)
        res = audit_layer(maps, components=[2, 3, 4], criterion=criterion, seed=seed_offset)
        assert int(res.k[0]) == 3, criterion
        assert res.min_fraction[0] == pytest.approx(1 / 3, abs=0.02)


def test_dead_filters_are_detected_and_never_anomalies():
    maps = torch.randn(100, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    maps[:, 0] = 0.0  # ReLU never fires
    maps[:, 1] = torch.randn(4, 4)  # same map for every sample (bias only)
    assert dead_filters(filter_matrix(maps)).tolist() == [True, True, False]
    res = audit_layer(maps, rule="small_component", rule_kwargs={"tau": 0.99})
    assert res.dead.tolist() == [True, True, False]
    assert not bool(res.anomaly[:2].any()) and res.k[:2].tolist() == [0, 0]
    assert float(res.ch[0]) == 0.0


@pytest.mark.stochastic
def test_small_component_rule_flags_the_isolated_samples(seed_offset):
    bulk = blobs([195], [(0, 0)], seed=seed_offset)
    far = blobs([5], [(25, 25)], scale=0.3, seed=1 + seed_offset)
    pts = torch.stack([torch.cat([bulk, far]), blobs([200], [(0, 0)], seed=2 + seed_offset)])
    res = audit_layer(maps_from_points(pts, seed=seed_offset), rule="small_component", seed=seed_offset)
    assert res.anomaly.tolist() == [True, False]
    assert res.flagged[0].nonzero().flatten().tolist() == list(range(195, 200))
    assert int(sample_votes([res])[197]) == 1


def test_small_component_rule_threshold_is_max_of_three_and_tau_n():
    labels = torch.tensor([[0] * 97 + [1] * 3, [0] * 98 + [1] * 2])
    ri = RuleInput(
        labels=labels,
        log_prob=torch.zeros(2, 100),
        ch=torch.ones(2),
        k=torch.tensor([2, 2]),
        dead=torch.tensor([False, False]),
    )
    assert small_component(ri, tau=0.01)[0].tolist() == [False, True]  # limit max(3, 1) = 3
    assert small_component(ri, tau=0.05)[0].tolist() == [True, True]  # limit 5


@pytest.mark.stochastic
def test_likelihood_rule_flags_far_samples_but_not_a_clean_gaussian(seed_offset):
    s = seed_offset
    bulk = blobs([192], [(0, 0)], seed=s)
    far = blobs([8], [(40, -40)], scale=0.5, seed=1 + s)  # 4% of the samples: below bulk_tau = 5%
    pts = torch.stack(
        [
            torch.cat([bulk, far]),
            blobs([200], [(0, 0)], seed=3 + s),
            blobs([100, 100], [(0, 0), (6, 0)], seed=4 + s),
        ]
    )
    res = audit_layer(maps_from_points(pts, seed=s), rule="likelihood", seed=s)
    assert res.anomaly.tolist() == [True, False, False]
    # every far sample is flagged; z > 8 also flags a Gaussian's own tail beyond ~3.6 sigma (0.27 of the 192
    # bulk samples on average over 150 seeds, at most 3), so up to 3 bulk samples may join them
    flagged = res.flagged[0]
    assert bool(flagged[192:].all()) and int(flagged[:192].sum()) <= 3, flagged.nonzero().flatten().tolist()


def test_likelihood_rule_uses_bulk_density_when_outliers_own_a_component():
    """Outliers captured by their own tight component have a high full-mixture density, a low bulk one."""
    labels = torch.tensor([[0] * 190 + [1] * 10])
    lp_full = torch.zeros(1, 200, dtype=torch.float64)
    comp = torch.stack([torch.zeros(200), torch.full((200,), -1e3)], -1)[None].double()
    comp[0, 190:, 0] = -60.0  # far from the bulk component
    comp[0, 190:, 1] = 0.0
    ri = RuleInput(
        labels=labels,
        log_prob=lp_full,
        ch=torch.ones(1),
        k=torch.tensor([2]),
        dead=torch.tensor([False]),
        component_log_prob=comp,
        weights=torch.tensor([[0.95, 0.05]]),
    )
    comp[0, :190, 0] += torch.linspace(-1, 0, 190, dtype=torch.float64)
    anomaly, flagged, _ = likelihood(ri, bulk_tau=0.1)
    assert anomaly.tolist() == [True] and flagged[0, 190:].all() and not flagged[0, :190].any()
    anomaly_full, _, _ = likelihood(ri, bulk_tau=0.0)
    assert anomaly_full.tolist() == [False]


@pytest.mark.stochastic
def test_ch_outlier_rule_flags_the_filter_with_an_outlying_ch(seed_offset):
    singles = [blobs([150], [(0, 0)], seed=s + seed_offset) for s in range(9)]
    split = blobs([140, 10], [(0, 0), (12, 12)], scale=0.5, seed=20 + seed_offset)
    pts = torch.stack([*singles, split])
    res = audit_layer(maps_from_points(pts, seed=seed_offset), rule="ch_outlier", seed=seed_offset)
    assert res.anomaly.nonzero().flatten().tolist() == [9]
    assert int(res.flagged[9].sum()) == 10
    ri = RuleInput(
        labels=torch.zeros(2, 10, dtype=torch.long),
        log_prob=torch.zeros(2, 10),
        ch=torch.ones(2),
        k=torch.tensor([2, 2]),
        dead=torch.tensor([False, False]),
    )
    assert not bool(ch_outlier(ri)[0].any())  # fewer than 3 live filters: no robust statistics


def test_audit_is_deterministic_for_a_seed():
    maps = torch.randn(120, 6, 3, 3, generator=torch.Generator().manual_seed(0))
    a, b = audit_layer(maps, seed=3), audit_layer(maps, seed=3)
    assert torch.equal(a.k, b.k) and torch.equal(a.ch, b.ch) and torch.equal(a.flagged, b.flagged)


@pytest.mark.parametrize(
    ("components", "match"),
    [
        ([], "non-empty list of integers >= 2"),
        ([1, 2], "integers >= 2"),
        ([2, 2], "must not repeat"),
        ([2, 200], "below the number of audited samples"),
    ],
)
def test_invalid_component_range_is_rejected(components, match):
    with pytest.raises(ValueError, match=match):
        validate_components(components, 100)


def test_audit_layer_rejects_unknown_backend_criterion_and_rule():
    maps = torch.randn(20, 2, 3, 3)
    with pytest.raises(ValueError, match="`backend` must be one of"):
        audit_layer(maps, backend="jax")
    with pytest.raises(ValueError, match="`criterion` must be one of"):
        audit_layer(maps, criterion="aic")
    with pytest.raises(ValueError, match="`rule` must be one of"):
        audit_layer(maps, rule="zscore")


def test_one_batch_over_layers_and_k_gives_the_per_layer_per_k_fits():
    """fit_gmm_torch_many (all K, several seeded groups in one batch) reproduces separate fit_gmm_torch calls."""
    layer_a = torch.stack([blobs([50, 40, 30], [(0, 0), (5, 0), (0, 5)], seed=s) for s in range(4)])
    layer_b = torch.stack([blobs([70, 50], [(0, 0), (4, 4)], seed=10 + s) for s in range(3)])
    many = fit_gmm_torch_many(torch.cat([layer_a, layer_b]), [2, 3, 4], seed=3, groups=[4, 3])
    for j, k in enumerate([2, 3, 4]):
        alone = [fit_gmm_torch(layer_a, k, seed=3), fit_gmm_torch(layer_b, k, seed=3)]
        assert many[j].weights.shape == (7, k)
        assert torch.equal(many[j].labels, torch.cat([f.labels for f in alone]))
        torch.testing.assert_close(
            many[j].log_prob, torch.cat([f.log_prob for f in alone]), rtol=1e-8, atol=1e-8
        )
        assert torch.equal(many[j].converged, torch.cat([f.converged for f in alone]))
    with pytest.raises(ValueError, match=r"`groups` must be non-negative sizes summing to B=7"):
        fit_gmm_torch_many(torch.cat([layer_a, layer_b]), [2], groups=[4, 4])
    with pytest.raises(ValueError, match=r"`ks` must hold at least one"):
        fit_gmm_torch_many(layer_a, [])


def test_merged_k_batch_gives_the_per_k_fits():
    # the GPU layout (every K in one batch, unused slots masked) against the CPU one (one batch per K)
    g = torch.Generator().manual_seed(3)
    pts = torch.cat(
        [torch.randn(10, 150, 2, generator=g), torch.randn(10, 50, 2, generator=g) * 0.5 + 4], dim=1
    )
    per_k = fit_gmm_torch_many(pts.double(), [2, 3, 4], seed=0, groups=[4, 6], merge_k=False)
    merged = fit_gmm_torch_many(pts.double(), [2, 3, 4], seed=0, groups=[4, 6], merge_k=True)
    for a, b in zip(per_k, merged):
        assert torch.equal(a.labels, b.labels) and torch.equal(a.converged, b.converged)
        torch.testing.assert_close(a.means, b.means, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(a.log_prob, b.log_prob, rtol=1e-9, atol=1e-12)


def test_audit_layers_equals_auditing_each_layer_alone():
    g = torch.Generator().manual_seed(5)
    maps = {"a": torch.randn(80, 6, 4, 4, generator=g), "b": torch.randn(80, 5, 3, 3, generator=g) ** 2}
    maps["a"][:, 2] = 1.0  # a dead filter
    together = audit_layers(maps, seed=1)
    for name, m in maps.items():
        alone = audit_layer(m, seed=1)
        assert torch.equal(together[name].k, alone.k) and torch.equal(together[name].anomaly, alone.anomaly)
        assert torch.equal(together[name].dead, alone.dead)
        torch.testing.assert_close(together[name].ch, alone.ch, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match=r"same number of samples for every layer"):
        audit_layers({"a": maps["a"], "c": torch.randn(50, 3, 4, 4)})


def test_chunked_fits_equal_one_batch(monkeypatch):
    """The CPU splits the layers into several batched fits to bound memory: the verdicts do not change."""
    import lightning_addons.gmm.audit as audit_mod

    g = torch.Generator().manual_seed(6)
    maps = {name: torch.randn(60, 4, 3, 3, generator=g) for name in "abc"}
    maps["b"][:3] *= 20.0
    one = audit_layers(maps, seed=2)
    monkeypatch.setattr(audit_mod, "EM_CHUNK_ELEMENTS", 4 * 60)  # one layer per batch
    assert len(audit_mod._chunks(list(maps), [4, 4, 4], 60, on_cpu=True)) == 3
    chunked = audit_layers(maps, seed=2)
    for name in maps:
        assert torch.equal(one[name].k, chunked[name].k) and torch.equal(
            one[name].flagged, chunked[name].flagged
        )
        torch.testing.assert_close(one[name].ch, chunked[name].ch, rtol=0, atol=0)


def test_released_maps_give_the_same_audit_and_are_freed_layer_by_layer():
    """release=True (the auditor's capture) centres each layer in place and pops it once projected: same
    verdicts, fits and points as auditing a kept copy; the caller's dict is empty afterwards."""
    g = torch.Generator().manual_seed(8)
    maps = {"a": torch.randn(70, 5, 4, 4, generator=g), "b": torch.randn(70, 3, 3, 3, generator=g) ** 2}
    maps["a"][:4, 1] += 15.0  # four far samples in one filter
    maps["b"][:, 0] = 2.0  # a dead filter
    kept = audit_layers({k: v.clone() for k, v in maps.items()}, seed=4)
    given = {k: v.clone() for k, v in maps.items()}
    released = audit_layers(given, seed=4, release=True)
    assert given == {}
    for name in maps:
        for field in ("k", "ch", "dead", "anomaly", "flagged", "score", "points", "min_fraction"):
            assert torch.equal(getattr(kept[name], field), getattr(released[name], field)), (name, field)
    # a mismatch of sample counts is found before any layer is consumed
    bad = {"a": maps["a"].clone(), "c": torch.randn(50, 3, 4, 4)}
    with pytest.raises(ValueError, match=r"same number of samples for every layer, got \[50, 70\]"):
        audit_layers(bad, release=True)
    assert set(bad) == {"a", "c"}


def test_lloyd_labels_do_not_depend_on_the_other_problems_of_the_batch():
    """The batched k-means freezes each problem at its own convergence (compacting the batch now and then):
    every problem ends with the labels it gets when run alone."""
    from lightning_addons.gmm.mixture import _argbest_dim1, _kmeanspp_seed, _lloyd

    clouds = []
    # from one blob (stops early) to four overlapping ones (many iterations), 80 points each
    for s in range(12):
        extra = [10 + s // 2] * (s % 4)
        sizes = [80 - sum(extra), *extra]
        centres = [(0, 0), (3, 0), (0, 3), (3, 3)][: len(sizes)]
        clouds.append(blobs(sizes, centres, scale=1.0 + 0.1 * s, seed=s))
    x = torch.stack(clouds).float()
    for k in (2, 3, 4):
        centres = _kmeanspp_seed(x, k, torch.Generator().manual_seed(k))
        together = _lloyd(x, centres)
        for i in range(len(x)):
            assert torch.equal(together[i], _lloyd(x[i : i + 1], centres[i : i + 1])[0]), (k, i)
    t = torch.tensor([[[1.0, 0.0, 2.0], [0.0, 0.0, 3.0], [0.0, 5.0, 3.0]]])  # [B=1, K=3, N=3] with ties
    assert _argbest_dim1(t, largest=False).tolist() == [[1, 0, 0]]  # ties: the first extreme
    assert _argbest_dim1(t, largest=True).tolist() == [[0, 2, 1]]
