"""ADUMBO's batches with pending points: the fantasies of the unseen outcomes, the vectorised two-objective
hypervolume improvement, the single suggestion left as it was, and the batch rules (``batch_rule``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lightning_addons.tuner import ADUMBO
from lightning_addons.tuner._pareto import pareto_mask
from lightning_addons.tuner.optimizers import (
    BATCH_RULES,
    MIN_DISTANCE,
    _hv_improvement,
    _hv_improvement_2d,
    _infer_ref_point,
    _normalised_distance,
    _Posterior,
    fit_gps,
)


def _data(n=20, dim=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((n, dim))
    Y = np.stack([np.sin(6 * X[:, 0]) + X[:, 1], (X.sum(1) - 1.2) ** 2], 1)
    return X, (Y - Y.mean(0)) / Y.std(0), rng


def test_two_objective_hypervolume_improvement_equals_the_general_one():
    rng = np.random.default_rng(0)
    for k in range(200):
        n = int(rng.integers(1, 12))
        front = rng.integers(0, 5, (n, 2)).astype(float) if k % 2 else rng.random((n, 2))  # ties, duplicates
        ref = front.min(0) - rng.uniform(0.0, 0.5, 2)
        # points dominated by, equal to, beyond and below the reference point of the front
        P = np.vstack([front + rng.uniform(-0.6, 0.6, front.shape), front[:2], ref - 0.1, rng.random((5, 2))])
        np.testing.assert_allclose(
            _hv_improvement_2d(P, front, ref), _hv_improvement(P, front, ref), atol=1e-12
        )


def test_fantasy_means_are_the_posterior_means_after_observing_each_fantasy():
    X, Y, rng = _data()
    post = _Posterior.from_models(fit_gps(X, Y, seed=0)[0], X)
    Xp, Xc = rng.random((3, 3)), rng.random((25, 3))
    Yp, Mc = post.fantasy_means(Xc, Xp, 4, np.random.default_rng(1))
    assert Yp.shape == (4, 3, 2) and Mc.shape == (4, 25, 2)
    for s in range(4):
        np.testing.assert_allclose(Mc[s], post.condition(Xp, Yp[s]).predict(Xc)[0], atol=1e-6)


@pytest.mark.stochastic
def test_fantasies_are_drawn_from_the_joint_posterior_of_the_unseen_points(seed_offset):
    import torch

    X, Y, rng = _data(seed=seed_offset)
    (gp,), _ = fit_gps(X, Y, seed=seed_offset)
    post = _Posterior.from_models([gp], X)
    Xp = rng.random((2, 3))
    Xp = np.vstack([Xp, Xp[:1] + 0.05])  # two correlated unseen points
    Yp, Mc = post.fantasy_means(Xp[:1], Xp, 20000, np.random.default_rng(seed_offset))
    with torch.no_grad():  # BoTorch's joint posterior (a multitask normal over 3 points x 2 outputs)
        mvn = gp.posterior(torch.as_tensor(Xp)).distribution
        mean, cov = mvn.mean.numpy(), mvn.covariance_matrix.numpy()
    noise = np.median(post.noise, axis=1) * post.ystd**2
    for j in range(2):
        idx = np.arange(j, 6, 2) if mvn._interleaved else np.arange(3 * j, 3 * j + 3)
        want = cov[np.ix_(idx, idx)] + np.diag(np.full(3, noise[j]))
        np.testing.assert_allclose(
            Yp[:, :, j].mean(0), mean[:, j], atol=0.05 * np.sqrt(want.diagonal().max())
        )
        scale = np.sqrt(np.outer(want.diagonal(), want.diagonal()))
        assert np.all(np.abs(np.cov(Yp[:, :, j].T) - want) <= 0.05 * scale)  # ~7 standard errors
        assert want[0, 2] / scale[0, 2] > 0.3  # the check above sees the correlation of the close pair
    # averaged over the fantasies, the means at a candidate are the current means
    np.testing.assert_allclose(Mc.mean(0), post.predict(Xp[:1])[0], atol=0.05)


def test_a_single_suggestion_with_nothing_pending_does_not_use_the_fantasies():
    X, Y, _ = _data(n=12, dim=2)
    a = ADUMBO(2, ["minimize", "minimize"], n_init=4, seed=3, n_fantasies=1)
    b = ADUMBO(2, ["minimize", "minimize"], n_init=4, seed=3, n_fantasies=64)
    a.tell(X, Y)
    b.tell(X, Y)
    np.testing.assert_array_equal(a.ask(), b.ask())
    with pytest.raises(ValueError, match=r"`n_fantasies` must be an integer >= 1, got 0"):
        ADUMBO(2, ["minimize", "minimize"], n_fantasies=0)
    c = ADUMBO(2, ["minimize", "minimize"], n_init=4)
    c.load_state_dict(json.loads(json.dumps(b.state_dict())))
    assert c.n_fantasies == 64


def test_a_batch_pick_scores_the_hypervolume_improvement_in_expectation_over_the_fantasies():
    X, Y, rng = _data(n=16, dim=2)
    opt = ADUMBO(2, ["maximize", "maximize"], n_init=4, seed=0, n_fantasies=8)
    opt.tell(X, Y)
    post = _Posterior.from_models(fit_gps(X, Y, seed=0)[0], X)
    front = Y[pareto_mask(Y)]
    ref = _infer_ref_point(front, eps=opt.ref_eps)
    Xc, Xp = rng.random((30, 2)), rng.random((2, 2))
    G = opt._fantasy_improvement(post, Xc, Xp, front, ref, np.random.default_rng(5))
    Yp, Mc = post.fantasy_means(Xc, Xp, 8, np.random.default_rng(5))
    want = np.mean(
        [_hv_improvement(Mc[s], np.vstack([front, Yp[s]]), ref) for s in range(8)], axis=0
    )  # fmt: skip
    np.testing.assert_allclose(G, want, atol=1e-12)


@pytest.mark.parametrize("rule", BATCH_RULES)
def test_the_first_pick_of_a_batch_is_the_sequential_pick_under_every_batch_rule(rule):
    X, Y, _ = _data(n=12, dim=2)
    seq = ADUMBO(2, ["minimize", "minimize"], n_init=4, seed=3)
    batch = ADUMBO(2, ["minimize", "minimize"], n_init=4, seed=3, batch_rule=rule, n_fantasies=8)
    seq.tell(X, Y)
    batch.tell(X, Y)
    np.testing.assert_array_equal(batch.ask(3)[0], seq.ask(1)[0])


@pytest.mark.stochastic
@pytest.mark.parametrize("rule", BATCH_RULES)
def test_no_batch_rule_suggests_duplicates_within_a_batch_or_of_pending_points(rule, seed_offset):
    X, Y, _ = _data(n=14, dim=3, seed=seed_offset)
    opt = ADUMBO(3, ["minimize", "minimize"], n_init=4, seed=seed_offset, batch_rule=rule, n_fantasies=8)
    opt.tell(X, Y)
    pending = opt.ask(2)
    batch = opt.ask(4, pending=pending)
    assert batch.shape == (4, 3)
    within = [_normalised_distance(batch[i : i + 1], np.delete(batch, i, 0))[0] for i in range(4)]
    assert min(within) >= MIN_DISTANCE
    assert _normalised_distance(batch, np.vstack([opt.X, pending])).min() >= MIN_DISTANCE


def test_the_lower_bound_rule_scores_each_candidate_at_its_bound_in_every_fantasy():
    X, Y, rng = _data(n=16, dim=2)
    opt = ADUMBO(2, ["maximize", "maximize"], n_init=4, seed=0, n_fantasies=8, batch_rule="lower_bound")
    opt.tell(X, Y)
    post = _Posterior.from_models(fit_gps(X, Y, seed=0)[0], X)
    front = Y[pareto_mask(Y)]
    ref = _infer_ref_point(front, eps=opt.ref_eps)
    Xc, Xp = rng.random((30, 2)), rng.random((2, 2))
    margin = 2.0 * post.condition(Xp, post.predict(Xp)[0]).predict(Xc)[1]
    G = opt._fantasy_improvement(post, Xc, Xp, front, ref, np.random.default_rng(5), margin)
    Yp, Mc = post.fantasy_means(Xc, Xp, 8, np.random.default_rng(5))
    want = np.mean(
        [_hv_improvement(Mc[s] - margin, np.vstack([front, Yp[s]]), ref) for s in range(8)], axis=0
    )  # fmt: skip
    np.testing.assert_allclose(G, want, atol=1e-12)
    # a bound below the mean never scores higher than the mean
    G_mean = opt._fantasy_improvement(post, Xc, Xp, front, ref, np.random.default_rng(5))
    assert np.all(G <= G_mean + 1e-12) and np.any(G < G_mean)


def test_the_batch_rule_is_validated_kept_in_the_state_and_checked_by_the_sampler():
    import optuna  # noqa: F401 - the sampler needs it

    from lightning_addons.tuner import HyperTunerSampler, SearchSpace

    with pytest.raises(
        ValueError, match=r"`batch_rule` must be one of \['fantasies', 'lower_bound'\], got 'believer'"
    ):
        ADUMBO(2, ["minimize", "minimize"], batch_rule="believer")
    a = ADUMBO(2, ["minimize", "minimize"], batch_rule="lower_bound")
    b = ADUMBO(2, ["minimize", "minimize"])
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert b.batch_rule == "lower_bound"
    with pytest.raises(ValueError, match=r"`batch_rule` must be one of .*got 'x'"):
        b.load_state_dict({**a.state_dict(), "batch_rule": "x"})
    space = SearchSpace({"x": {"type": "float", "low": 0.0, "high": 1.0}})
    with pytest.raises(ValueError, match=r"`batch_rule` must be one of .*got 'believer'"):  # before any trial
        HyperTunerSampler(space, ["minimize"], optimizer_kwargs={"batch_rule": "believer"})
    HyperTunerSampler(space, ["minimize"], optimizer_kwargs={"batch_rule": "lower_bound", "grid": None})
