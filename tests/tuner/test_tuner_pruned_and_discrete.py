"""Early stopping that protects close calls (the pruner's margin), pruned trials in the sampler, and
ADUMBO's rounding of discrete (categorical / integer) inputs."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from lightning_addons.tuner import SearchSpace
from lightning_addons.tuner.optimizers import ADUMBO, MIN_DISTANCE, snap_to_grid
from lightning_addons.tuner.pruners import ParetoHalvingPruner, make_pruner
from lightning_addons.tuner.sampler import HyperTunerSampler

MAXMIN = ["maximize", "minimize"]


# ----------------------------------------------------------------------------- pruner margin
def test_a_close_call_is_not_pruned_with_a_margin_but_a_clear_loser_is():
    peers = [[0.9, 10.0], [0.8, 5.0], [0.95, 12.0]]
    plain = ParetoHalvingPruner(min_resource=1, reduction_factor=2, min_peers=4)
    safe = ParetoHalvingPruner(min_resource=1, reduction_factor=2, min_peers=4, margin=0.1)
    close = [0.88, 10.2]  # dominated by (0.9, 10.0), but only 0.2 s slower: within 10% of the 7 s range
    assert plain.should_prune(1, close, peers, MAXMIN)
    assert not safe.should_prune(1, close, peers, MAXMIN)
    assert safe.should_prune(1, [0.5, 20.0], peers, MAXMIN)  # beaten by far in both objectives
    assert not safe.should_prune(1, [0.99, 20.0], peers, MAXMIN)  # on the front: never


def test_the_margin_is_part_of_the_config_only_when_set():
    assert "margin" not in ParetoHalvingPruner().config()  # old fingerprints stay valid
    assert ParetoHalvingPruner(margin=0.05).config()["margin"] == 0.05
    assert make_pruner({"name": "pareto_halving", "margin": 0.05}).margin == 0.05


@pytest.mark.parametrize("margin", [-0.1, 1.0, "0.1", True])
def test_a_bad_margin_is_an_error_naming_it(margin):
    with pytest.raises(ValueError, match=r"pruner `margin` must be a number in \[0, 1\), got"):
        ParetoHalvingPruner(margin=margin)


def test_no_rung_at_or_after_max_resource_so_a_finished_trial_is_never_stopped():
    p = ParetoHalvingPruner(min_resource=2, reduction_factor=3, max_resource=6, min_peers=2)
    assert p.rungs(60) == [2]
    assert [s for s in range(1, 60) if p.is_rung(s)] == [2]
    assert not p.should_prune(6, [0.1, 50.0], [[0.9, 1.0]] * 5, MAXMIN)
    assert p.should_prune(2, [0.1, 50.0], [[0.9, 1.0]] * 5, MAXMIN)
    assert ParetoHalvingPruner(min_resource=2, reduction_factor=3).rungs(6) == [2, 6]  # without it: 6 too
    assert ParetoHalvingPruner(max_resource=6).config()["max_resource"] == 6


@pytest.mark.parametrize("value", [1, 2.5, True])
def test_a_bad_max_resource_is_an_error_naming_it(value):
    with pytest.raises(ValueError, match=r"pruner `max_resource` must be None or an integer >= 2, got"):
        ParetoHalvingPruner(max_resource=value)


# ----------------------------------------------------------------------------- pruned trials in the sampler
SPACE = SearchSpace(
    {
        "x": {"type": "float", "low": 0.0, "high": 1.0},
        "c": {"type": "categorical", "choices": ["a", "b"], "default": "a"},
    }
)
DISTS = {"x": FloatDistribution(0.0, 1.0), "c": CategoricalDistribution(["a", "b"])}


def _study_with_a_pruned_trial():
    study = optuna.create_study(directions=MAXMIN)
    for i, (x, c) in enumerate([(0.1, "a"), (0.5, "b"), (0.9, "a")]):
        steps = {f"objectives@{s}": [0.1 * s, 1.0 * s] for s in (1, 2, 3, 4)}
        study.add_trial(
            create_trial(
                params={"x": x, "c": c}, distributions=DISTS, values=[0.5 + 0.1 * i, 4.0], user_attrs=steps
            )
        )
    study.add_trial(
        create_trial(
            state=TrialState.PRUNED,
            params={"x": 0.3, "c": "b"},
            distributions=DISTS,
            user_attrs={"partial_values": [0.4, 0.5], "pruned_at": 1, "objectives@1": [0.4, 0.5]},
        )
    )
    return study


def test_a_pruned_trial_reaches_the_surrogate_at_its_pessimistic_full_run_value():
    study = _study_with_a_pruned_trial()
    sampler = HyperTunerSampler(SPACE, MAXMIN, log_objectives=[1])
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    X, Y = sampler._pruned_observations(pruned, done)
    # accuracy at its partial value; time (a log-scaled cost) scaled from step 1 to the last step, 4
    assert X.tolist() == [SPACE.to_unit({"x": 0.3, "c": "b"}).tolist()]
    assert Y.tolist() == [[0.4, 2.0]]
    ignore = HyperTunerSampler(SPACE, MAXMIN, log_objectives=[1], pruned_trials="ignore")
    assert ignore._pruned_observations(pruned, done)[0].shape == (0, 2)


def test_the_sampler_tells_the_optimiser_about_pruned_trials_and_the_discrete_grid(monkeypatch):
    study = _study_with_a_pruned_trial()
    sampler = HyperTunerSampler(SPACE, MAXMIN, log_objectives=[1], n_init=2)
    seen = {}
    real_tell = ADUMBO.tell

    def spy(self, X, Y, Yvar=None):
        seen.setdefault("X", []).append(np.asarray(X))
        seen["grid"] = self.grid
        return real_tell(self, X, Y, Yvar)

    monkeypatch.setattr(ADUMBO, "tell", spy)
    study.sampler = sampler
    study.optimize(lambda t: (t.suggest_float("x", 0.0, 1.0), 1.0), n_trials=1)
    assert len(seen["X"][0]) == 4  # 3 complete + 1 pruned
    assert seen["grid"][0] is None and seen["grid"][1].tolist() == [0.25, 0.75]  # the space's grid


def test_pruned_rows_keep_a_repeated_objectives_fixed_noise_with_its_largest_variance():
    V_done = np.array([[np.nan, 0.01], [np.nan, 0.04]])  # accuracy measured once, time repeated
    V = HyperTunerSampler._pruned_variances(V_done, 2)
    assert np.isnan(V[:, 0]).all() and V[:, 1].tolist() == [0.04, 0.04]
    assert np.isnan(
        HyperTunerSampler._pruned_variances(np.array([[np.nan, 0.01], [np.nan, np.nan]]), 1)
    ).all()


def test_a_bad_pruned_trials_option_is_an_error_naming_it():
    with pytest.raises(
        ValueError, match=r"`pruned_trials` must be one of \['pessimistic', 'ignore'\], got 'x'"
    ):
        HyperTunerSampler(SPACE, MAXMIN, pruned_trials="x")


# ----------------------------------------------------------------------------- discrete inputs
def test_snap_rounds_each_discrete_column_to_its_nearest_value_and_leaves_the_rest():
    grid = [None, np.array([1 / 6, 0.5, 5 / 6]), np.array([0.5])]
    X = np.array([[0.123, 0.0, 0.9], [0.7, 0.34, 0.1], [1.0, 1.0, 0.5]])
    S = snap_to_grid(X, grid)
    assert S[:, 0].tolist() == X[:, 0].tolist()
    assert S[:, 1].tolist() == [1 / 6, 0.5, 5 / 6]
    assert S[:, 2].tolist() == [0.5, 0.5, 0.5]


def test_space_unit_grid_holds_categorical_centres_and_small_integer_ranges():
    space = SearchSpace(
        {
            "c": {"type": "categorical", "choices": [1, 2, 3, 4]},
            "n": {"type": "int", "low": 1, "high": 3},
            "big": {"type": "int", "low": 1, "high": 1000},
            "x": {"type": "float", "low": 0.0, "high": 1.0},
        }
    )
    grid = space.unit_grid()
    assert grid[0] == [0.125, 0.375, 0.625, 0.875]
    assert grid[1] == pytest.approx([1 / 6, 0.5, 5 / 6])
    assert grid[2] is None and grid[3] is None
    # every grid value maps back to its own choice
    assert [space.params[1].from_unit(u) for u in grid[1]] == [1, 2, 3]


@pytest.mark.stochastic
def test_adumbo_suggests_discrete_inputs_on_their_grid_and_never_an_observed_point(seed_offset):
    grid = [None, [0.25, 0.75]]
    rng = np.random.default_rng(seed_offset)
    opt = ADUMBO(2, MAXMIN, seed=seed_offset, n_init=4, grid=grid, candidates="pool", pool_size=256)
    X = snap_to_grid(rng.random((8, 2)), [None, np.array(grid[1])])
    opt.tell(X, np.column_stack([X[:, 0] + X[:, 1], 1.0 + X[:, 1] + 0.1 * X[:, 0]]))
    for _ in range(3):
        x = opt.ask()
        assert x[0, 1] in (0.25, 0.75)
        gap = np.sqrt(((opt.X - x) ** 2).sum(1).min() / 2)
        assert gap >= MIN_DISTANCE
        opt.tell(x, np.column_stack([x[:, 0] + x[:, 1], 1.0 + x[:, 1] + 0.1 * x[:, 0]]))
    restored = ADUMBO(2, MAXMIN)
    restored.load_state_dict(opt.state_dict())
    assert [list(g) for g in restored.grid[1:]] == [[0.25, 0.75]] and restored.grid[0] is None


@pytest.mark.parametrize(
    "grid, match",
    [([None], r"`grid` must have one entry per input \(2\), got 1 entries"),
     ([None, [0.5, 1.5]], r"`grid\[1\]` must be None or a non-empty list of values in \[0, 1\], got")],
)  # fmt: skip
def test_a_bad_grid_is_an_error_naming_it(grid, match):
    with pytest.raises(ValueError, match=match):
        ADUMBO(2, MAXMIN, grid=grid)
