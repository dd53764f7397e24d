"""ADUMBO's suggestion machinery: the NumPy posterior against BoTorch's, observation variances (fixed-noise
GPs), joint batches with pending points, the warm-started fit, the 2-objective Pareto sweep, and the
sampler's use of ``objective_sem`` and stored hyper-parameters."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from lightning_addons.tuner import ADUMBO
from lightning_addons.tuner._pareto import dominates, nondominated_mask, pareto_mask
from lightning_addons.tuner.optimizers import (
    MIN_DISTANCE,
    _mll_loss,
    _normalised_distance,
    _Posterior,
    fit_gps,
)


def _data(n=24, dim=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((n, dim))
    Y = np.stack([np.sin(6 * X[:, 0]) + X[:, 1], (X.sum(1) - 1.2) ** 2], 1)
    return X, (Y - Y.mean(0)) / Y.std(0), rng


def _botorch_posterior(models, Xc):
    with torch.no_grad():
        posts = [m.posterior(torch.as_tensor(Xc)) for m in models]
        mu = np.concatenate([p.mean.numpy().reshape(len(Xc), -1) for p in posts], 1)
        sd = np.concatenate([p.variance.sqrt().numpy().reshape(len(Xc), -1) for p in posts], 1)
    return mu, sd


@pytest.mark.parametrize("with_variances", [False, True])
def test_numpy_posterior_equals_botorchs_posterior_of_the_fitted_models(with_variances):
    X, Y, rng = _data()
    V = None
    if with_variances:
        V = np.full(Y.shape, np.nan)
        V[:, 1] = rng.uniform(0.01, 0.3, len(X))
    models, warm = fit_gps(X, Y, seed=0, Yvar=V)
    assert len(models) == (2 if with_variances else 1)  # one multi-output model without variances
    json.dumps(warm)  # the warm start is JSON-safe (it lives in state_dict and in the study)
    Xc = rng.random((40, 3))
    mu, sd = _Posterior.from_models(models, X).predict(Xc)
    mu_ref, sd_ref = _botorch_posterior(models, Xc)
    np.testing.assert_allclose(mu, mu_ref, atol=1e-8)
    np.testing.assert_allclose(sd, sd_ref, atol=1e-8)


@pytest.mark.parametrize("with_variances", [False, True])
def test_hand_written_marginal_likelihood_equals_gpytorchs_and_its_fit_is_as_good_as_botorchs(with_variances):
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from gpytorch.mlls import ExactMarginalLogLikelihood

    X, Y, rng = _data(n=30)
    Xt, Yt = torch.as_tensor(X), torch.as_tensor(Y)
    kw = {"train_Yvar": torch.as_tensor(rng.uniform(0.01, 0.2, Y.shape))} if with_variances else {}

    def botorch_loss(gp):
        gp.train()
        with torch.no_grad():
            return float(
                -ExactMarginalLogLikelihood(gp.likelihood, gp)(gp(*gp.train_inputs), gp.train_targets).sum()
            )

    gp = SingleTaskGP(Xt, Yt, **kw)
    for _ in range(3):  # random positive hyper-parameters (BoTorch's raw values are the values, bounded)
        with torch.no_grad():
            for name, p in gp.named_parameters():
                p.copy_(
                    torch.as_tensor(rng.uniform(0.05, 2.0, p.shape) * (1 if "constant" not in name else 0.3))
                )
        raw = torch.cat([p.detach().reshape(-1) for _, p in gp.named_parameters()])
        # BoTorch's priors hold float32 parameters, hence agreement to ~1e-8, not 1e-15
        assert float(_mll_loss(gp, Xt)(raw)) == pytest.approx(botorch_loss(gp), rel=1e-7)
    ours = fit_gps(X, Y, seed=0, Yvar=kw["train_Yvar"].numpy() if kw else None)[0]
    ref = SingleTaskGP(Xt, Yt, **kw)
    fit_gpytorch_mll(ExactMarginalLogLikelihood(ref.likelihood, ref))
    assert sum(botorch_loss(m) for m in ours) <= botorch_loss(ref) + 1e-3


def test_kriging_believer_conditioning_equals_botorchs_condition_on_observations():
    X, Y, rng = _data()
    (gp,), _ = fit_gps(X, Y, seed=0)
    post = _Posterior.from_models([gp], X)
    Xp = rng.random((3, 3))
    Yp = post.predict(Xp)[0]
    Xc = rng.random((30, 3))
    with torch.no_grad():
        gp.posterior(torch.as_tensor(Xp))  # BoTorch needs a prediction cache before conditioning
        cond = gp.condition_on_observations(torch.as_tensor(Xp), torch.as_tensor(Yp))
    mu_ref, sd_ref = _botorch_posterior([cond], Xc)
    mu, sd = post.condition(Xp, Yp).predict(Xc)
    np.testing.assert_allclose(mu, mu_ref, atol=1e-8)
    np.testing.assert_allclose(sd, sd_ref, atol=1e-8)


def test_observation_variances_give_the_posterior_of_a_directly_built_fixed_noise_botorch_model():
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from gpytorch.mlls import ExactMarginalLogLikelihood

    rng = np.random.default_rng(1)
    X = rng.random((20, 2))
    Y = np.stack([(X[:, 0] - 0.3) ** 2 + X[:, 1], 5.0 + 4.0 * X[:, 0] + rng.normal(0, 0.3, 20)], 1)
    sem = np.stack([np.full(20, np.nan), rng.uniform(0.05, 0.8, 20)], 1)  # objective 1 repeated
    opt = ADUMBO(2, ["minimize", "minimize"], n_init=4, seed=0, log_objectives=[1])
    opt.tell(X, Y, Yvar=sem**2)
    # the reference: the same transformed data built by hand, one BoTorch model per objective
    Ym = -np.stack([Y[:, 0], np.log(Y[:, 1])], 1)  # maximisation convention, objective 1 on a log scale
    mean, std = Ym.mean(0), Ym.std(0)
    Ys = (Ym - mean) / std
    var1 = (sem[:, 1] / Y[:, 1]) ** 2 / std[1] ** 2  # delta method for the log, then standardised
    post = opt._fit(*opt._standardised_targets()[:2], opt._standardised_variances(std))
    fitted = opt._gp_warm["params"]  # ADUMBO's fitted hyper-parameters, one dict per objective's model
    Xt = torch.as_tensor(X)
    ref, ref_fit = [], []
    for j, kw in enumerate([{}, {"train_Yvar": torch.as_tensor(var1[:, None])}]):
        gp = SingleTaskGP(Xt, torch.as_tensor(Ys[:, j : j + 1]), **kw)
        with torch.no_grad():
            for name, p in gp.named_parameters():
                p.copy_(torch.as_tensor(fitted[j][name]))
        ref.append(gp.eval())
        gp2 = SingleTaskGP(Xt, torch.as_tensor(Ys[:, j : j + 1]), **kw)  # BoTorch's own fit on the same data
        fit_gpytorch_mll(ExactMarginalLogLikelihood(gp2.likelihood, gp2))
        ref_fit.append(gp2.eval())
    Xc = rng.random((25, 2))
    mu, sd = post.predict(Xc)
    mu_ref, sd_ref = _botorch_posterior(ref, Xc)
    np.testing.assert_allclose(mu, mu_ref, atol=1e-8)
    np.testing.assert_allclose(sd, sd_ref, atol=1e-8)
    # and the fit itself lands where BoTorch's does (same likelihood, optimised on a log scale here)
    mu_fit, sd_fit = _botorch_posterior(ref_fit, Xc)
    np.testing.assert_allclose(mu, mu_fit, atol=1e-2)
    np.testing.assert_allclose(sd, sd_fit, atol=1e-2)
    # the variances matter: at the observed points the noisy objective's posterior sd grows with the sem
    _, sd_obs = post.predict(X)
    assert np.corrcoef(sd_obs[:, 1], sem[:, 1])[0, 1] > 0.5
    plain = ADUMBO(2, ["minimize", "minimize"], n_init=4, seed=0, log_objectives=[1])
    plain.tell(X, Y)
    assert plain._standardised_variances(std) is None
    post_plain = plain._fit(*plain._standardised_targets()[:2])
    assert np.abs(post_plain.predict(Xc)[1][:, 1] - sd[:, 1]).max() > 1e-3


def test_observation_variances_are_validated_stored_and_partial_columns_keep_inferred_noise():
    opt = ADUMBO(2, ["minimize", "minimize"], n_init=3)
    X = np.random.default_rng(0).random((4, 2))
    with pytest.raises(ValueError, match=r"`Yvar` must have the shape of `Y` \(4, 2\), got \(4, 1\)"):
        opt.tell(X, X, Yvar=np.ones((4, 1)))
    with pytest.raises(ValueError, match="`Yvar` must hold variances >= 0"):
        opt.tell(X, X, Yvar=-np.ones((4, 2)))
    V = np.array([[np.nan, 0.1], [np.nan, 0.2], [np.nan, np.nan], [np.nan, 0.1]])  # column 1 incomplete
    opt.tell(X, X, Yvar=V)
    assert opt._standardised_variances(np.ones(2)) is None  # no column complete: homoskedastic noise
    state = json.loads(json.dumps(opt.state_dict()))
    back = ADUMBO(2, ["minimize", "minimize"], n_init=3)
    back.load_state_dict(state)
    np.testing.assert_array_equal(np.isnan(back.Yvar), np.isnan(V))
    np.testing.assert_allclose(back.Yvar[~np.isnan(V)], V[~np.isnan(V)])


@pytest.mark.stochastic
def test_a_batch_is_joint_with_the_pending_points_and_has_no_near_duplicates(seed_offset):
    from botorch.test_functions.multi_objective import ZDT1

    prob = ZDT1(dim=4)

    def f(u):
        with torch.no_grad():
            return prob(torch.as_tensor(u)).numpy()

    for weight in ("adaptive", 0.0):  # mean-only picks crowd the same optimum unless the batch is joint
        opt = ADUMBO(4, ["minimize", "minimize"], n_init=8, seed=seed_offset, weight=weight)
        x = np.random.default_rng(seed_offset).random((12, 4))
        opt.tell(x, f(x))
        pending = opt.ask(2)
        batch = opt.ask(4, pending=pending)
        assert batch.shape == (4, 4)
        within = [_normalised_distance(batch[i : i + 1], np.delete(batch, i, 0))[0] for i in range(4)]
        assert min(within) >= MIN_DISTANCE
        assert _normalised_distance(batch, np.vstack([opt.X, pending])).min() >= MIN_DISTANCE


def test_the_warm_start_is_kept_in_the_state_and_a_restored_optimiser_suggests_the_same():
    X, Y, _ = _data(n=12, dim=2)
    a = ADUMBO(2, ["minimize", "minimize"], n_init=4, seed=5, warm_start=True)
    a.tell(X, Y)
    a.ask()
    assert a.state_dict()["gp_warm_start"]["params"] and a.state_dict()["warm_start"] is True
    b = ADUMBO(2, ["minimize", "minimize"], n_init=4, seed=5)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    np.testing.assert_array_equal(a.ask(), b.ask())
    # a warm start from another model layout (other dimension) is ignored, not loaded into the wrong shape
    _, warm = fit_gps(X, Y, seed=0)
    models, _ = fit_gps(np.hstack([X, X[:, :1]]), Y, seed=0, warm_start=warm)
    assert models[0].covar_module.lengthscale.shape[-1] == 3


def test_two_objective_pareto_sweep_equals_the_pairwise_dominance_definition():
    from lightning_addons.tuner._nsga2 import nondominated_rank

    rng = np.random.default_rng(0)
    for k in range(300):
        n = int(rng.integers(2, 30))
        F = rng.integers(0, 4, (n, 2)).astype(float) if k % 2 else rng.random((n, 2))  # ties and duplicates
        np.testing.assert_array_equal(nondominated_mask(F), ~dominates(F, F).any(0))
        # a constant third column changes no dominance but takes the general pairwise path
        np.testing.assert_array_equal(nondominated_rank(F), nondominated_rank(np.c_[F, np.zeros(n)]))
    Y = np.array([[1.0, 1.0], [1.0, 1.0], [0.0, 2.0], [np.nan, 5.0], [0.5, 0.5]])
    assert pareto_mask(Y).tolist() == [True, False, True, False, False]


def test_sampler_reads_objective_sem_and_hands_the_latest_stored_fit_to_the_optimiser(monkeypatch):
    import optuna

    from lightning_addons.tuner import sampler as sampler_mod
    from lightning_addons.tuner.space import SearchSpace

    space = SearchSpace(
        {"x": {"type": "float", "low": 0.0, "high": 1.0}, "y": {"type": "float", "low": 0, "high": 1}}
    )
    made = []
    real = sampler_mod.make_optimizer

    def spy(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(sampler_mod, "make_optimizer", spy)
    sampler = sampler_mod.HyperTunerSampler(space, ["minimize", "minimize"], n_init=4, seed=0)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    dist = space.optuna_distributions()
    rng = np.random.default_rng(0)
    for k in range(6):
        x, y = rng.random(2)
        sem = [None, 0.1 * (k + 1)] if k != 2 else None  # trial 2 measured once
        attrs = {} if sem is None else {"objective_sem": sem}
        study.add_trial(
            optuna.trial.create_trial(
                params={"x": x, "y": y}, distributions=dist, values=[x + y, (1 - x) ** 2], user_attrs=attrs
            )
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_float("y", 0, 1)), n_trials=2)
    first, second = made[-2], made[-1]
    assert np.isnan(first.Yvar[:, 0]).all()
    np.testing.assert_allclose(first.Yvar[[0, 1, 3, 4, 5], 1], (0.1 * np.array([1, 2, 4, 5, 6])) ** 2)
    assert np.isnan(first.Yvar[2, 1])
    stored = study.trials[6].system_attrs[sampler_mod.GP_WARM_ATTR]
    assert stored["params"] and sampler._warm == stored  # trial 7's optimiser was given trial 6's fit
    assert second.n_observed == 7
