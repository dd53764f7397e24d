"""Multi-objective early stopping (ParetoHalvingPruner) and repeated noisy objectives of the HyperTuner."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lightning_addons.tuner import HyperTuner, write_report
from lightning_addons.tuner.pruners import (
    ParetoHalvingPruner,
    hv_contributions,
    make_pruner,
    nondominated_ranks,
)

MAXMIN = ["maximize", "minimize"]


# ----------------------------------------------------------------------------- the pure rule
def test_rungs_are_min_resource_times_powers_of_the_reduction_factor():
    p = ParetoHalvingPruner(min_resource=2, reduction_factor=3)
    assert p.rungs(60) == [2, 6, 18, 54]
    assert [s for s in range(1, 60) if p.is_rung(s)] == [2, 6, 18, 54]


def test_nondominated_ranks_of_known_layers():
    F = np.array([[3.0, 3.0], [1.0, 1.0], [2.0, 2.0], [3.0, 0.0], [2.0, 2.0], [0.0, 0.0]])
    assert nondominated_ranks(F).tolist() == [0, 2, 1, 1, 1, 3]


def test_hv_contributions_of_two_symmetric_points_are_exact():
    # normalised to [0, 1], ref -0.1: union 0.21, each alone 0.11, so each adds 0.1
    assert hv_contributions(np.array([[1.0, 0.0], [0.0, 1.0]])) == pytest.approx([0.1, 0.1], abs=1e-12)


def test_a_dominated_trial_is_pruned_and_a_front_trial_never_is():
    p = ParetoHalvingPruner(min_resource=1, reduction_factor=2, min_peers=4)
    peers = [[0.9, 10.0], [0.8, 5.0], [0.95, 12.0]]
    assert p.should_prune(1, [0.7, 11.0], peers, MAXMIN)  # dominated by (0.9, 10)
    assert not p.should_prune(1, [0.99, 20.0], peers, MAXMIN)  # best accuracy: on the front
    assert not p.should_prune(1, [0.1, 1.0], peers, MAXMIN)  # fastest: on the front
    # a front trial stays even when the cut would keep fewer than the front's size
    many = [[0.9 - 0.01 * i, 10.0 - i] for i in range(8)]  # all on one front
    assert not p.should_prune(1, [0.905, 9.5], many, MAXMIN)


def test_no_decision_off_a_rung_or_below_min_peers():
    p = ParetoHalvingPruner(min_resource=1, reduction_factor=3, min_peers=4)
    peers = [[0.9, 1.0], [0.9, 1.0], [0.9, 1.0]]
    assert p.should_prune(3, [0.1, 5.0], peers, MAXMIN)
    assert not p.should_prune(2, [0.1, 5.0], peers, MAXMIN)  # 2 is not a rung
    assert not p.should_prune(3, [0.1, 5.0], peers[:2], MAXMIN)  # 3 trials < min_peers
    assert not p.should_prune(3, [0.1, 5.0], [*peers[:2], [float("nan"), 1.0]], MAXMIN)  # NaN peer ignored


def test_the_cut_keeps_the_best_share_by_rank():
    # 6 trials, reduction 3: the best 2 go on; front {A}; rank 1 {B}; rank 2 {C}, ...
    p = ParetoHalvingPruner(min_resource=1, reduction_factor=3, min_peers=2, tie_break="none")
    A, B, C, D, E = [5.0, 5.0], [4.0, 4.0], [3.0, 3.0], [2.0, 2.0], [1.0, 1.0]
    dirs = ["maximize", "maximize"]
    assert not p.should_prune(1, B, [A, C, D, E, [0.0, 0.0]], dirs)  # second of 6: kept
    assert p.should_prune(1, C, [A, B, D, E, [0.0, 0.0]], dirs)  # third of 6: pruned


def test_hypervolume_tie_break_keeps_the_larger_contribution_at_the_cut():
    # front {(10, 10)}; rank 1: four mutually non-dominated points; 5 trials, reduction 2 -> keep 2:
    # only the rank-1 point with the largest exclusive hypervolume contribution goes on
    dirs = ["maximize", "maximize"]
    top = [10.0, 10.0]
    rank1 = [[9.0, 0.0], [0.0, 8.0], [5.0, 5.0], [5.2, 4.7]]
    contrib = hv_contributions(np.array(rank1))
    best = int(np.argmax(contrib))
    assert np.sum(contrib == contrib[best]) == 1
    hv = ParetoHalvingPruner(min_resource=1, reduction_factor=2, min_peers=2)
    none = ParetoHalvingPruner(min_resource=1, reduction_factor=2, min_peers=2, tie_break="none")
    for i, v in enumerate(rank1):
        peers = [top, *[w for j, w in enumerate(rank1) if j != i]]
        assert hv.should_prune(1, v, peers, dirs) == (i != best)
        assert not none.should_prune(1, v, peers, dirs)


@pytest.mark.parametrize(
    "spec, match",
    [
        ({"min_resource": 0}, r"pruner `min_resource` must be an integer >= 1, got 0"),
        ({"reduction_factor": 1}, r"pruner `reduction_factor` must be an integer >= 2, got 1"),
        ({"reduction_factor": 2.5}, r"pruner `reduction_factor` must be an integer >= 2, got 2.5"),
        ({"min_peers": 1}, r"pruner `min_peers` must be an integer >= 2, got 1"),
        (
            {"tie_break": "crowding"},
            r"pruner `tie_break` must be one of \['hypervolume', 'none'\], got 'crowding'",
        ),
        (
            {"name": "median"},
            r"`pruner.name` must be one of \['learning_curve', 'pareto_halving'\], got 'median'",
        ),
        ({"eta": 3}, r"`pruner` has unknown argument\(s\) \['eta'\] for 'pareto_halving'; allowed: \["),
        ("yes", r"`pruner` must be None, a mapping"),
    ],
)
def test_bad_pruner_config_is_an_error_naming_the_argument_before_the_first_trial(tmp_path, spec, match):
    with pytest.raises(ValueError, match=match):
        make_pruner(spec)
    calls = []
    with pytest.raises(ValueError, match=match):
        _tuner(tmp_path, lambda p: calls.append(p) or {"acc": 1.0, "time": 1.0}, pruner=spec)
    assert calls == [] and not (tmp_path / "s.db").exists()


def test_bad_pruner_in_the_tune_yaml_is_an_error_naming_the_argument(tmp_path):
    from lightning_addons.tuner.cli import build_tuner

    cfg = {
        "tune": {
            "objectives": ["train_loss:min", "time:min"],
            "space": {"lr": {"type": "float", "low": 0.01, "high": 0.1}},
            "output_dir": str(tmp_path),
            "pruner": {"name": "pareto_halving", "reduction_factor": 0},
        },
        "model": {"class_path": "lightning_addons.modules.ImageClassifier"},
    }
    with pytest.raises(ValueError, match=r"pruner `reduction_factor` must be an integer >= 2, got 0"):
        build_tuner(cfg)


# ----------------------------------------------------------------------------- in a tuning run
SPACE = {
    "q": {"type": "float", "low": 0.1, "high": 1.0, "default": 0.9},
    "c": {"type": "float", "low": 1.0, "high": 2.0, "default": 1.0},
}
EPOCHS = 6


def learning_curve(p, report):
    """acc rises to q, time grows by c per epoch: a trial is dominated early iff it is at the end."""
    for step in range(1, EPOCHS + 1):
        report(step, {"acc": p["q"] * (1 - 0.5**step), "time": p["c"] * step})
    return {"acc": p["q"] * (1 - 0.5**EPOCHS), "time": p["c"] * EPOCHS}


def _tuner(tmp_path, fn=learning_curve, **kw):
    kw.setdefault("n_trials", 5)
    kw.setdefault("pruner", {"min_resource": 1, "reduction_factor": 3, "min_peers": 4})
    return HyperTuner(
        space=SPACE,
        objectives=["acc:max", "time:min"],
        trial_fn=fn,
        algorithm="sobol",
        storage=f"sqlite:///{tmp_path}/s.db",
        output_dir=tmp_path,
        progress=False,
        mopir=False,
        **kw,
    )


GOOD = [{"q": 0.9, "c": 1.0}, {"q": 0.6, "c": 1.0}, {"q": 1.0, "c": 1.5}]
DOMINATED = {"q": 0.3, "c": 1.8}  # below (0.9, 1.0) at every epoch


def _enqueue(tuner, params_list):
    study = tuner.create_study()
    for p in params_list:
        study.enqueue_trial(p)


def test_a_dominated_trial_is_pruned_with_its_partial_values_stored(tmp_path):
    calls = []

    def fn(p, report):
        calls.append(p)
        return learning_curve(p, report)

    tuner = _tuner(tmp_path, fn, n_trials=5)
    _enqueue(tuner, [*GOOD, DOMINATED, {"q": 0.95, "c": 1.1}])
    res = tuner.run()
    states = [h["state"] for h in res.history]
    assert states == ["COMPLETE", "COMPLETE", "COMPLETE", "PRUNED", "COMPLETE"]
    pruned = res.history[3]
    assert pruned["pruned_at"] == 1  # the first rung, with 4 trials there
    assert pruned["values"] == {"acc": pytest.approx(0.3 * 0.5), "time": pytest.approx(1.8)}
    assert pruned not in res.pareto and all(h["state"] == "COMPLETE" for h in res.pareto)
    frozen = res.study.trials[3]
    assert frozen.state.name == "PRUNED" and frozen.values is None
    assert frozen.user_attrs["partial_values"] == pytest.approx([0.15, 1.8])
    assert frozen.user_attrs["objectives@1"] == frozen.user_attrs["partial_values"]
    assert "objectives@2" not in frozen.user_attrs  # it stopped at step 1
    # the complete trials stored every epoch's vector
    assert sorted(k for k in res.study.trials[0].user_attrs if k.startswith("objectives@")) == [
        f"objectives@{s}" for s in range(1, EPOCHS + 1)
    ]
    assert len(calls) == 5
    paths = write_report(res, tmp_path / "report")
    assert "1 stopped early (pruned" in paths["summary"].read_text()


def test_a_resumed_study_prunes_against_the_trials_of_the_earlier_run(tmp_path):
    first = _tuner(tmp_path, n_trials=2)
    _enqueue(first, GOOD[:2])
    assert [h["state"] for h in first.run().history] == ["COMPLETE"] * 2
    # a new tuner (another process) on the same storage: its dominated trial meets 3 trials at step 1, two
    # of them from the first run (with only its own run's trial it would be below min_peers=4 and run on)
    second = _tuner(tmp_path, n_trials=4)
    _enqueue(second, [GOOD[2], DOMINATED])
    res = second.run()
    assert [h["state"] for h in res.history] == ["COMPLETE"] * 3 + ["PRUNED"]
    assert res.history[3]["params"] == pytest.approx(DOMINATED) and res.history[3]["pruned_at"] == 1
    # pruned trials count towards n_trials: a further resume with the same n_trials runs nothing
    assert len(_tuner(tmp_path, n_trials=4).run().history) == 4


def test_resuming_with_another_pruner_config_is_refused_naming_the_key(tmp_path):
    _tuner(tmp_path, n_trials=2).run()
    with pytest.raises(ValueError, match=r"differing keys: pruner.reduction_factor \(stored 3, now 2\)"):
        _tuner(tmp_path, n_trials=3, pruner={"min_resource": 1, "reduction_factor": 2, "min_peers": 4}).run()


def test_a_lightning_trial_process_is_stopped_when_its_reported_step_is_pruned(tmp_path):
    """The subprocess runner reads the trial's per-validation progress and kills it on a prune."""
    from lightning_addons.tuner.trial import LightningTrialRunner

    config = {
        "seed_everything": 0,
        "model": {
            "class_path": "lightning_addons.modules.ImageClassifier",
            "init_args": {
                "model": {
                    "class_path": "lightning_addons.modules.nn.LeNet5",
                    "init_args": {"width": 0.25, "input_size": 16},
                },
                "lr": 0.01,
            },
        },
        "data": {
            "class_path": "lightning_addons.datamodules.DigitsDataModule",
            "init_args": {"resize": 16, "batch_size": 128},
        },
        "trainer": {
            "accelerator": "cpu",
            "max_epochs": 50,
            "limit_train_batches": 2,
            "limit_val_batches": 1,
            "num_sanity_val_steps": 0,
        },
    }
    runner = LightningTrialRunner(config, {}, workdir=tmp_path, timeout=600)
    seen = []

    def on_progress(step, record):
        seen.append((step, record))
        return step == 2

    runner.on_progress = on_progress
    result = runner({}, 0)
    assert result["status"] == "pruned" and result["step"] == 2
    assert [s for s, _ in seen] == [1, 2]
    assert "val_acc" in result["metrics"] and result["time"] > 0 and result["energy"] >= 0
    assert result["metrics"] == seen[1][1]["metrics"]


# ----------------------------------------------------------------------------- repeated objectives
def test_repeated_time_is_the_mean_with_its_standard_error_and_the_report_shows_it(tmp_path):
    times = iter([1.0, 2.0, 3.0, 10.0, 10.0, 10.0, 7.0, 8.0, 9.0])

    def fn(p):
        return {"acc": p["q"], "time": next(times)}

    tuner = _tuner(tmp_path, fn, n_trials=3, pruner=None, repeats={"time": 3})
    _enqueue(tuner, [{"q": 0.9, "c": 1.0}, {"q": 0.5, "c": 1.0}, {"q": 0.95, "c": 1.0}])
    res = tuner.run()
    t0 = res.study.trials[0]
    assert t0.values == pytest.approx([0.9, 2.0])
    assert t0.user_attrs["objective_sem"] == [None, pytest.approx(1.0 / math.sqrt(3))]
    assert t0.user_attrs["objective_repeats"] == {"time": [1.0, 2.0, 3.0]}
    assert res.study.trials[1].user_attrs["objective_sem"] == [None, 0.0]
    assert res.history[2]["values"]["time"] == pytest.approx(8.0)
    text = write_report(res, tmp_path / "report", space=tuner.space)["summary"].read_text()
    assert "2 ± 0.58 (mean of 3)" in text
    assert "mean of the repeated runs, ± the standard error of the mean" in text


def test_a_saving_counts_by_its_standard_errors_when_both_were_repeated():
    from lightning_addons.tuner.report import is_cheaper

    base = {"values": {"time": 10.0}, "sem": {"time": 0.2}}
    small_noisy = {"values": {"time": 8.0}, "sem": {"time": 1.0}}  # 20% cheaper, 1.96 SE: not a win
    small_exact = {"values": {"time": 9.5}, "sem": {"time": 0.05}}  # 5% cheaper, 2.4 SE: a win
    assert not is_cheaper(small_noisy, base, "time")
    assert is_cheaper(small_exact, base, "time")
    assert is_cheaper({"values": {"time": 8.0}}, base, "time")  # one side without SEM: the 10% rule


@pytest.mark.parametrize(
    "repeats, match",
    [
        ({"energy": 3}, r"`repeats`: 'energy' is not an objective; objectives: \['acc', 'time'\]"),
        ({"time": 0}, r"`repeats.time` must be an integer >= 1, got 0"),
        ([3], r"`repeats` must be a mapping \{objective_name: k\} or None, got \[3\]"),
    ],
)
def test_bad_repeats_are_an_error_naming_the_argument(tmp_path, repeats, match):
    with pytest.raises(ValueError, match=match):
        _tuner(tmp_path, pruner=None, repeats=repeats)
