"""LearningCurvePruner: stops a trial whose predicted full run is dominated, with high probability, by
the front of the study's complete trials."""

from __future__ import annotations

import numpy as np
import pytest

from lightning_addons.tuner import HyperTuner
from lightning_addons.tuner.pruners import LearningCurvePruner, make_pruner

MAXMIN = ["maximize", "minimize"]
LOGS = [False, True]  # val_acc as is, time on a log scale (the tuner's defaults)


def _complete(partial_acc, final_acc, partial_time=1.0, epochs=6):
    """(vector at step 1, final vector) pairs of complete trials; time grows by the same per-step rate."""
    return [
        ([a, partial_time * (1 + 0.05 * i)], [f, epochs * partial_time * (1 + 0.05 * i)])
        for i, (a, f) in enumerate(zip(partial_acc, final_acc))
    ]


# steady learners: the final accuracy follows the epoch-1 accuracy closely
STEADY = _complete([0.50, 0.60, 0.70, 0.80, 0.55, 0.75], [0.80, 0.85, 0.90, 0.95, 0.83, 0.92])


def test_a_hopeless_curve_is_pruned_at_the_first_step():
    p = LearningCurvePruner(min_complete=5, quantile=0.9, max_resource=6)
    # chance accuracy after one epoch, as slow as the others: every complete trial at this accuracy level
    # would end far below the front
    assert p.should_prune(1, [0.1, 1.1], [], MAXMIN, complete=STEADY, log_scale=LOGS)
    # a trial as good as the complete ones at this step goes on
    assert not p.should_prune(1, [0.78, 1.1], [], MAXMIN, complete=STEADY, log_scale=LOGS)
    # a poor but much cheaper trial goes on: its predicted time puts it on the cheap end of the front
    assert not p.should_prune(1, [0.1, 0.2], [], MAXMIN, complete=STEADY, log_scale=LOGS)


def test_a_late_learner_whose_quantile_reaches_the_front_is_kept():
    p = LearningCurvePruner(min_complete=5, quantile=0.9, max_resource=6)
    # the same study plus two complete trials that were near chance after one epoch and ended on top:
    # the partial value predicts the final one poorly, the prediction interval is wide, the trial goes on
    late = STEADY + _complete([0.15, 0.2], [0.96, 0.9], partial_time=1.02)
    upper, _ = p.optimistic_final([0.12, 1.1], late, MAXMIN, LOGS)
    assert upper[0] > 0.96  # the optimistic accuracy reaches the best complete trial's
    assert not p.should_prune(1, [0.12, 1.1], [], MAXMIN, complete=late, log_scale=LOGS)
    assert p.should_prune(1, [0.12, 1.1], [], MAXMIN, complete=STEADY, log_scale=LOGS)
    # a lower quantile is bolder
    bold = LearningCurvePruner(min_complete=5, quantile=0.55, max_resource=6)
    assert bold.optimistic_final([0.12, 1.1], late, MAXMIN, LOGS)[0][0] < upper[0]


def test_the_local_spread_widens_the_bound_where_early_values_predicted_poorly_and_narrows_it_elsewhere():
    xs = np.linspace(0.5, 0.8, 12)
    ys = 0.3 + 0.8 * xs + 0.01 * np.sin(7 * xs)  # steady learners: final follows the partial value
    late = [(0.12, 0.35), (0.15, 0.93), (0.18, 0.6)]  # near chance after one epoch, anything at the end
    done = [([x, 1.0 + 0.02 * i], [y, 6.0 + 0.12 * i]) for i, (x, y) in enumerate(zip(xs, ys))]
    done += [([x, 1.05], [y, 6.3]) for x, y in late]
    local = LearningCurvePruner(min_complete=5, quantile=0.9, max_resource=6)
    textbook = LearningCurvePruner(min_complete=5, quantile=0.9, max_resource=6, spread="global")
    slow_late_learner = [0.14, 1.3]
    assert not local.should_prune(1, slow_late_learner, [], MAXMIN, complete=done, log_scale=LOGS)
    assert textbook.should_prune(1, slow_late_learner, [], MAXMIN, complete=done, log_scale=LOGS)
    steady = [0.7, 1.1]
    assert (
        local.optimistic_final(steady, done, MAXMIN, LOGS)[0][0]
        < textbook.optimistic_final(steady, done, MAXMIN, LOGS)[0][0] - 0.1
    )


def test_never_prunes_below_min_complete_or_at_or_after_max_resource():
    p = LearningCurvePruner(min_complete=6, quantile=0.9, min_resource=2, max_resource=6)
    assert p.should_prune(2, [0.1, 1.1], [], MAXMIN, complete=STEADY, log_scale=LOGS)
    assert not p.should_prune(2, [0.1, 1.1], [], MAXMIN, complete=STEADY[:5], log_scale=LOGS)
    # complete trials with a non-finite vector do not count towards min_complete
    broken = STEADY[:5] + [([float("nan"), 1.0], [0.9, 6.0])]
    assert not p.should_prune(2, [0.1, 1.1], [], MAXMIN, complete=broken, log_scale=LOGS)
    assert not p.should_prune(2, [0.1, 1.1], [], MAXMIN, complete=None, log_scale=LOGS)
    assert [s for s in range(1, 10) if p.is_rung(s)] == [2, 3, 4, 5] == p.rungs(9)
    assert not p.should_prune(1, [0.1, 1.1], [], MAXMIN, complete=STEADY, log_scale=LOGS)
    assert not p.should_prune(6, [0.1, 1.1], [], MAXMIN, complete=STEADY, log_scale=LOGS)
    assert not p.should_prune(2, [float("nan"), 1.1], [], MAXMIN, complete=STEADY, log_scale=LOGS)


def test_the_prediction_interval_is_the_least_squares_one_of_scipy():
    from scipy.stats import linregress
    from scipy.stats import t as student_t

    rng = np.random.default_rng(0)
    x = rng.uniform(0.1, 0.8, 9)
    y = 0.4 + 0.7 * x + rng.normal(0, 0.05, 9)
    t_ = rng.uniform(0.5, 2.0, 9)
    complete = [([a, c], [b, 6 * c * rng.uniform(0.9, 1.1)]) for a, b, c in zip(x, y, t_)]
    p = LearningCurvePruner(min_complete=5, quantile=0.8, spread="global")
    upper, Y = p.optimistic_final([0.3, 1.0], complete, MAXMIN, LOGS)
    fit = linregress(x, y)
    n, x0 = len(x), 0.3
    sxx = np.sum((x - x.mean()) ** 2)
    s = fit.stderr * np.sqrt(sxx)  # residual standard deviation
    se = np.sqrt(s**2 * (1 + 1 / n) + fit.stderr**2 * (x0 - x.mean()) ** 2)
    assert upper[0] == pytest.approx(
        fit.intercept + fit.slope * x0 + student_t.ppf(0.8, n - 2) * se, rel=1e-10
    )
    # time: modelled as -log(time), the optimistic side is the short one
    tfit = linregress(-np.log(t_), Y[:, 1])
    assert upper[1] > tfit.intercept + tfit.slope * 0.0


@pytest.mark.parametrize(
    "spec, match",
    [
        ({"min_complete": 2}, r"pruner `min_complete` must be an integer >= 3, got 2"),
        ({"min_complete": 5.0}, r"pruner `min_complete` must be an integer >= 3, got 5.0"),
        ({"quantile": 1.0}, r"pruner `quantile` must be a number in \(0.5, 1\), got 1.0"),
        ({"quantile": 0.5}, r"pruner `quantile` must be a number in \(0.5, 1\), got 0.5"),
        ({"quantile": "high"}, r"pruner `quantile` must be a number in \(0.5, 1\), got 'high'"),
        ({"min_resource": 0}, r"pruner `min_resource` must be an integer >= 1, got 0"),
        (
            {"min_resource": 2, "max_resource": 2},
            r"pruner `max_resource` must be None or an integer > min_resource \(2\), got 2",
        ),
        (
            {"reduction_factor": 3},
            r"`pruner` has unknown argument\(s\) \['reduction_factor'\] for 'learning_curve'; allowed: "
            r"\['min_complete', 'quantile', 'min_resource', 'max_resource', 'spread', 'model'\]",
        ),
        ({"spread": "knn"}, r"pruner `spread` must be one of \['local', 'global'\], got 'knn'"),
        ({"model": "forest"}, r"pruner `model` must be one of \['line', 'gp'\], got 'forest'"),
    ],
)
def test_bad_learning_curve_args_are_errors_naming_the_argument(spec, match):
    with pytest.raises(ValueError, match=match):
        make_pruner({"name": "learning_curve", **spec})


def test_a_bad_log_scale_length_is_an_error_naming_it():
    with pytest.raises(
        ValueError, match=r"`log_scale` must have one entry per objective \(2\), got \[True\]"
    ):
        LearningCurvePruner().optimistic_final([0.5, 1.0], STEADY, MAXMIN, [True])


def _with_config(groups):
    """Complete trials as (pairs, unit configurations): ``groups`` of (u, partial acc, final acc)."""
    rows = [r for g in groups for r in g]
    pairs = _complete([a for _, a, _ in rows], [f for _, _, f in rows])
    return pairs, [[u, 0.5] for u, _, _ in rows]


# near chance after one epoch, two kinds: u near 0 never recovers, u near 1 learns late and ends on top;
# and steady learners in between. The partial accuracy alone cannot tell the first two apart.
HOPELESS = [(0.0, 0.12, 0.15), (0.05, 0.13, 0.2), (0.1, 0.11, 0.14), (0.15, 0.12, 0.18)]
LATE = [(0.85, 0.12, 0.9), (0.9, 0.11, 0.93), (0.95, 0.13, 0.95), (1.0, 0.12, 0.92)]
STEADY_U = [(0.4, 0.7, 0.85), (0.5, 0.75, 0.88), (0.6, 0.8, 0.9)]


def test_the_gp_model_tells_a_hopeless_configuration_from_a_late_learner_with_the_same_partial_value():
    pairs, units = _with_config([HOPELESS, LATE, STEADY_U])
    line = LearningCurvePruner(min_complete=5, quantile=0.9, max_resource=6)
    gp = LearningCurvePruner(min_complete=5, quantile=0.9, max_resource=6, model="gp")
    trial = [0.12, 1.5]  # chance accuracy after one epoch, a little slower than the others
    kw = {"complete": pairs, "log_scale": LOGS, "complete_params": units}
    # the line sees only the partial value: near chance, finals anywhere from 0.14 to 0.95, so it goes on
    assert not line.should_prune(1, trial, [], MAXMIN, params=[0.05, 0.5], **kw)
    # with the configuration: like the hopeless ones -> stopped; like the late learners -> goes on
    assert gp.should_prune(1, trial, [], MAXMIN, params=[0.05, 0.5], **kw)
    assert not gp.should_prune(1, trial, [], MAXMIN, params=[0.95, 0.5], **kw)
    hopeless = gp.optimistic_final(trial, pairs, MAXMIN, LOGS, [0.05, 0.5], units)[0][0]
    late = gp.optimistic_final(trial, pairs, MAXMIN, LOGS, [0.95, 0.5], units)[0][0]
    assert hopeless < 0.5 < 0.9 < late
    # without configurations the gp model is the line
    assert gp.optimistic_final(trial, pairs, MAXMIN, LOGS)[0] == pytest.approx(
        line.optimistic_final(trial, pairs, MAXMIN, LOGS)[0]
    )
    with pytest.raises(
        ValueError, match=r"`complete_params` must have one configuration per complete trial \(11\), got 10"
    ):
        gp.optimistic_final(trial, pairs, MAXMIN, LOGS, [0.05, 0.5], units[:-1])


def test_the_gp_model_is_in_the_fingerprint_and_asks_for_configurations_only_when_chosen():
    assert "model" not in LearningCurvePruner().config()
    assert LearningCurvePruner(model="gp").config()["model"] == "gp"
    # the tuner converts every complete trial's configuration only for the rule that reads them
    assert not LearningCurvePruner().uses_params
    assert LearningCurvePruner(model="gp").uses_params


# ----------------------------------------------------------------------------- in a tuning run
SPACE = {
    "q": {"type": "float", "low": 0.1, "high": 1.0, "default": 0.9},
    "c": {"type": "float", "low": 1.0, "high": 2.0, "default": 1.0},
}
EPOCHS = 6


def curve(p, report):
    """acc rises to q (a little noise in how fast), time grows by c per epoch."""
    k = 0.5 + 0.02 * np.sin(17 * p["q"] + 3 * p["c"])
    for step in range(1, EPOCHS + 1):
        report(step, {"acc": p["q"] * (1 - k**step), "time": p["c"] * step})
    return {"acc": p["q"] * (1 - k**EPOCHS), "time": p["c"] * EPOCHS}


def test_the_tuner_prunes_with_the_complete_trials_curves_and_stores_the_partial_values(tmp_path):
    tuner = HyperTuner(
        space=SPACE,
        objectives=["acc:max", "time:min"],
        trial_fn=curve,
        algorithm="sobol",
        n_trials=8,
        storage=f"sqlite:///{tmp_path}/s.db",
        output_dir=tmp_path,
        progress=False,
        mopir=False,
        pruner={"name": "learning_curve", "min_complete": 5, "quantile": 0.9, "max_resource": EPOCHS},
    )
    study = tuner.create_study()
    good = [{"q": 0.9, "c": 1.0}, {"q": 0.6, "c": 1.0}, {"q": 1.0, "c": 1.5}, {"q": 0.8, "c": 1.2}]
    good += [{"q": 0.7, "c": 1.1}]
    for p in [*good, {"q": 0.2, "c": 1.8}, {"q": 0.95, "c": 1.05}, {"q": 0.25, "c": 1.9}]:
        study.enqueue_trial(p)
    res = tuner.run()
    states = [h["state"] for h in res.history]
    # the first five run fully (min_complete); the two slow, inaccurate ones stop at epoch 1
    assert states == ["COMPLETE"] * 5 + ["PRUNED", "COMPLETE", "PRUNED"]
    assert [h["pruned_at"] for h in res.history if h["state"] == "PRUNED"] == [1, 1]
    frozen = res.study.trials[5]
    assert frozen.user_attrs["partial_values"] == pytest.approx(frozen.user_attrs["objectives@1"])
    again = HyperTuner(
        space=SPACE,
        objectives=["acc:max", "time:min"],
        trial_fn=curve,
        algorithm="sobol",
        n_trials=8,
        storage=f"sqlite:///{tmp_path}/s.db",
        output_dir=tmp_path,
        progress=False,
        mopir=False,
        pruner={"name": "learning_curve", "min_complete": 5, "quantile": 0.8, "max_resource": EPOCHS},
    )
    with pytest.raises(ValueError, match=r"differing keys: pruner.quantile \(stored 0.9, now 0.8\)"):
        again.run()


def test_the_learning_curve_rule_is_chosen_and_checked_from_the_tune_yaml(tmp_path):
    import yaml

    from lightning_addons.tuner.cli import build_tuner

    tune = yaml.safe_load(
        "pruner: {name: learning_curve, min_complete: 5, quantile: 0.95, min_resource: 1, max_resource: 6}"
    )
    pruner = make_pruner(tune["pruner"])
    assert isinstance(pruner, LearningCurvePruner)
    assert pruner.config() == {
        "class": "LearningCurvePruner",
        "min_complete": 5,
        "quantile": 0.95,
        "min_resource": 1,
        "max_resource": 6,
        "spread": "local",
    }
    cfg = {
        "tune": {
            "objectives": ["val_acc:max", "time:min"],
            "space": {"lr": {"type": "float", "low": 0.01, "high": 0.1}},
            "output_dir": str(tmp_path),
            "pruner": {"name": "learning_curve", "quantile": 1.5},
        },
        "model": {"class_path": "lightning_addons.modules.ImageClassifier"},
    }
    with pytest.raises(ValueError, match=r"pruner `quantile` must be a number in \(0.5, 1\), got 1.5"):
        build_tuner(cfg)


class _Recorder:
    """A pruner that never stops a trial and records what the tuner passes to a learning-curve rule."""

    uses_complete = True
    uses_params = True

    def __init__(self):
        self.calls = []

    def is_rung(self, step):
        return step == 2

    def should_prune(self, step, values, peers, directions, **kw):
        self.calls.append(kw)
        return False


def test_the_tuner_passes_unit_cube_configurations_aligned_with_the_complete_trials(tmp_path):
    rec = _Recorder()
    tuner = HyperTuner(
        space=SPACE,
        objectives=["acc:max", "time:min"],
        trial_fn=curve,
        algorithm="sobol",
        n_trials=3,
        storage=f"sqlite:///{tmp_path}/s.db",
        output_dir=tmp_path,
        progress=False,
        mopir=False,
        pruner=rec,
    )
    study = tuner.create_study()
    for p in [{"q": 0.1, "c": 1.0}, {"q": 1.0, "c": 2.0}, {"q": 0.55, "c": 1.5}]:
        study.enqueue_trial(p)
    tuner.run()
    np.testing.assert_allclose(
        [c["params"] for c in rec.calls], [[0.0, 0.0], [1.0, 1.0], [0.5, 0.5]], atol=1e-12
    )
    # the third trial sees the first two, complete, in the same order as their (partial, final) pairs
    last = rec.calls[-1]
    np.testing.assert_allclose(last["complete_params"], [[0.0, 0.0], [1.0, 1.0]], atol=1e-12)
    finals = [f for _, f in last["complete"]]
    np.testing.assert_allclose([t for _, t in finals], [6.0, 12.0])  # time = c * epochs: 1.0 and 2.0
