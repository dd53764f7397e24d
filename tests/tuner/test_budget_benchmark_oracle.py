"""The oracle bound of ``benchmarks/hypertuner_budget.py`` (``--oracle``): on a run's own trial stream, the
share of the budget (summed trial CPU) and of the total CPU (trials + tuner) at which stopping every
non-front trial at a rung would reach the run's final hypervolume."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def hb(budget_benchmark):
    return budget_benchmark


def _trial(number, acc, cpu, total_at_end, epochs=4):
    curve = [[e, acc * e / epochs, cpu * e / epochs] for e in range(1, epochs + 1)]
    return {
        "number": number,
        "state": "COMPLETE",
        "values": [acc, cpu],
        "cpu": cpu,
        "total_cpu_at_end": total_at_end,
        "curve": curve,
    }


def test_the_oracle_share_counts_the_tuner_cpu_on_the_total_cpu_axis(hb):
    # trials 0 and 2 are the front (0: fast, 2: accurate); 1 and 3 are dominated by 0 or 2.
    # each trial costs 1 s of tuner CPU before it starts: process CPU at the ends 3, 6, 10, 13
    trials = [
        _trial(0, 0.8, 2.0, 3.0),
        _trial(1, 0.5, 2.0, 6.0),
        _trial(2, 0.9, 3.0, 10.0),
        _trial(3, 0.7, 2.0, 13.0),
    ]
    run = {"method": "ht", "seed": 0, "task": "digits", "epochs": 4, "trials": trials}
    run.update(trial_cpu=9.0, tuner_cpu_outside_trials=4.0)
    o = hb.oracle_share(run, 1)
    # budget axis: trial 1 stopped at epoch 1 (0.5 s): 2 + 0.5 + 3 of 9
    assert o["share"] == pytest.approx(5.5 / 9.0)
    assert o["share_no_pruning"] == pytest.approx(7.0 / 9.0)
    # total axis: the last front trial ends at 10 s of process CPU, less the 1.5 s the oracle saved, of 13
    assert o["share_total_cpu"] == pytest.approx(8.5 / 13.0)
    assert o["share_total_cpu_no_pruning"] == pytest.approx(10.0 / 13.0)
    # a replay through a pruner that stops nothing gives the no-pruning shares
    never = {"name": "pareto_halving", "min_resource": 1, "reduction_factor": 2, "min_peers": 99}
    r = hb.replay_share(run, never)
    assert r["pruned"] == 0
    assert r["share"] == pytest.approx(7.0 / 9.0)
    assert r["share_total_cpu"] == pytest.approx(10.0 / 13.0)


def test_digits_full_size_is_lenet5s_32x32_input_on_every_image_outside_the_validation_set(hb):
    try:
        hb.set_digits_size("full")
        d = hb.digits_data()
        assert d["Xtr"].shape == (1347, 1, 32, 32) and d["Xva"].shape == (450, 1, 32, 32)
        with pytest.raises(
            ValueError, match=r"`--digits-size` must be one of \['full', 'small'\], got 'big'"
        ):
            hb.set_digits_size("big")
    finally:
        hb.set_digits_size("small")
    assert hb.digits_data()["Xtr"].shape == (600, 1, 16, 16)
