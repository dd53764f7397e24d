"""ADUMBO and its baselines as pure ask/tell optimisers: seeding, serialisation, batches, failures, quality."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lightning_addons.tuner import ADUMBO, hypervolume, make_optimizer
from lightning_addons.tuner.optimizers import QNEHVI


def _branin_currin(u):
    from botorch.test_functions.multi_objective import BraninCurrin

    with torch.no_grad():
        return BraninCurrin()(torch.as_tensor(np.atleast_2d(u))).numpy()


def _run(opt, n):
    for _ in range(n):
        x = opt.ask()
        opt.tell(x, _branin_currin(x))
    return opt


def test_adumbo_is_seedable_and_its_state_survives_json():
    a = _run(ADUMBO(2, ["minimize", "minimize"], n_init=5, seed=3), 6)
    b = _run(ADUMBO(2, ["minimize", "minimize"], n_init=5, seed=3), 6)
    np.testing.assert_allclose(a.X, b.X)
    state = json.loads(json.dumps(a.state_dict()))
    c = ADUMBO(2, ["minimize", "minimize"], n_init=5, seed=99)
    c.load_state_dict(state)
    np.testing.assert_allclose(a.ask(), c.ask())
    with pytest.raises(ValueError, match="state is for dim=2"):
        ADUMBO(3, ["minimize", "minimize"]).load_state_dict(state)


def test_adumbo_weight_schedule_and_ablations():
    opt = ADUMBO(2, ["minimize", "minimize"], n_init=4, w0=0.5, tau=5.0)
    assert opt.current_weight() == pytest.approx(0.5)
    _run(opt, 9)
    assert opt.current_weight() == pytest.approx(0.5 * np.exp(-5 / 5.0))
    assert make_optimizer("adumbo_w1", 2, ["minimize"]).current_weight() == 1.0
    assert make_optimizer("adumbo_w0", 2, ["minimize"]).current_weight() == 0.0


@pytest.mark.stochastic
def test_adumbo_batch_and_pending_points_are_distinct_and_failures_are_imputed(seed_offset):
    opt = _run(ADUMBO(2, ["minimize", "maximize"], n_init=4, seed=seed_offset), 5)
    opt.tell(np.array([[0.5, 0.5]]), np.array([[np.nan, np.nan]]))  # a failed trial
    X = opt.ask(3)
    assert X.shape == (3, 2) and len({tuple(np.round(x, 9)) for x in X}) == 3
    nxt = opt.ask(1, pending=X)
    assert np.min(np.abs(X - nxt).max(1)) > 1e-6
    assert np.all((0 <= X) & (X <= 1))


def test_adumbo_default_reference_point_is_the_front_nadir_minus_a_margin_and_ignores_dominated_points():
    from lightning_addons.tuner.optimizers import _hv_improvement, _infer_ref_point

    front = np.array([[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]])  # maximisation convention
    np.testing.assert_allclose(_infer_ref_point(front), [-0.1, -0.1])
    # a far-off dominated observation (e.g. a diverged run) used to drag the old "worst observed" point
    # away; the front-anchored point does not move, so G keeps valuing the front's own region
    ref = _infer_ref_point(front)
    extreme, inner = np.array([[3.0, -0.05]]), np.array([[0.8, 0.8]])
    assert _hv_improvement(inner, front, ref)[0] > _hv_improvement(extreme, front, ref)[0]


@pytest.mark.stochastic
def test_adumbo_beats_random_search_on_branin_currin_with_the_same_budget(seed_offset):
    ref, max_hv = np.array([18.0, 6.0]), 59.36011874867746
    ad = _run(ADUMBO(2, ["minimize", "minimize"], n_init=6, seed=seed_offset), 16)
    rnd = _run(make_optimizer("random", 2, ["minimize", "minimize"], seed=seed_offset), 16)
    hv_ad = hypervolume(-ad.Y, -ref) / max_hv
    hv_rnd = hypervolume(-rnd.Y, -ref) / max_hv
    print(f"HV/max after 16 evaluations: adumbo {hv_ad:.3f}, random {hv_rnd:.3f}")
    assert hv_ad > hv_rnd + 0.05


def test_baselines_ask_tell_and_qnehvi_step():
    for name in ("random", "sobol"):
        opt = _run(make_optimizer(name, 2, ["minimize", "minimize"], seed=1), 3)
        assert opt.X.shape == (3, 2)
    q = _run(QNEHVI(2, ["minimize", "minimize"], n_init=4, seed=0, num_restarts=1, raw_samples=32), 5)
    assert q.X.shape == (5, 2) and np.all((q.X >= 0) & (q.X <= 1))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"weight": 2.0}, r"`weight` must be 'adaptive' or a number in \[0, 1\], got 2.0"),
        ({"weight": "usemo"}, "`weight` must be 'adaptive' or a number"),
        ({"tau": 0}, "`tau` must be > 0, got 0"),
        ({"n_init": 0}, "`n_init` must be an integer >= 1, got 0"),
        ({"log_objectives": [5]}, r"`log_objectives` must hold indices in \[0, 1\]"),
    ],
)
def test_adumbo_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ADUMBO(2, ["minimize", "minimize"], **kwargs)


def test_make_optimizer_and_directions_errors():
    with pytest.raises(
        ValueError, match=r"`algorithm` must be one of \['adumbo', 'random', 'sobol', 'qnehvi'"
    ):
        make_optimizer("cmaes", 2, ["minimize"])
    with pytest.raises(ValueError, match=r"`direction` must be one of \['minimize', 'maximize'\].*got 'up'"):
        ADUMBO(2, ["up"])
    opt = ADUMBO(2, ["minimize"])
    with pytest.raises(ValueError, match=r"`Y` must have shape \(1, 1\)"):
        opt.tell(np.zeros((1, 2)), np.zeros((1, 2)))
