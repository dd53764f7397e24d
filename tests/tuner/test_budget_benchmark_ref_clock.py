"""The reference clock of ``benchmarks/hypertuner_budget.py`` (``--time-unit ref``): CPU seconds divided by
a reference kernel's CPU seconds timed at both ends of every stretch, the kernel itself on no axis, so a
trial measured while the machine is slow reads the same as one measured while it is fast."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest


@pytest.fixture()
def hb(budget_benchmark):
    yield budget_benchmark
    budget_benchmark.set_time_unit("cpu", "digits")


class FakeCPU:
    """A process clock the test advances by hand."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _clock_with_fake_kernel(hb, monkeypatch, kernel_costs):
    cpu = FakeCPU()
    monkeypatch.setattr(hb.time, "process_time", cpu)
    clock = hb.Clock("ref", "etth1")
    costs = iter(kernel_costs)

    def kernel() -> None:
        cpu.t += next(costs)

    clock.kernel = kernel
    return clock, cpu


def test_the_ref_clock_scales_each_stretch_by_the_mean_kernel_time_at_its_ends_and_drops_the_kernel(
    hb, monkeypatch
):
    scale = hb.ref_scale("etth1")
    # the machine halves its speed between the two stretches: the kernel takes 0.1 s, then 0.2 s
    clock, cpu = _clock_with_fake_kernel(hb, monkeypatch, [0.1, 0.1, 0.2])
    clock.probe()
    t0 = clock.now()
    cpu.t += 3.0  # one epoch at full speed
    clock.probe()
    t1 = clock.now()
    cpu.t += 6.0  # the same epoch at half speed
    clock.probe()
    t2 = clock.now()
    assert t1 - t0 == pytest.approx(3.0 * scale / 0.1)
    # the second stretch is scaled by the mean of the kernel times at its two ends (0.1 and 0.2)
    assert t2 - t1 == pytest.approx(6.0 * scale / 0.15)
    assert clock.probe_cpu == pytest.approx(0.4)  # the kernel's own CPU is on no axis
    cpu.t += 0.4  # between probes: scaled by the latest kernel time
    assert clock.now() - t2 == pytest.approx(0.4 * scale / 0.2)


def test_the_cpu_clock_is_the_process_cpu_and_its_probe_runs_nothing(hb, monkeypatch):
    cpu = FakeCPU()
    monkeypatch.setattr(hb.time, "process_time", cpu)
    clock = hb.Clock("cpu", "etth1")
    t0 = clock.now()
    clock.probe()
    cpu.t += 2.5
    assert clock.kernel is None and clock.now() - t0 == pytest.approx(2.5)


def test_an_unknown_time_unit_is_refused_naming_the_argument_and_the_choices(hb):
    with pytest.raises(ValueError, match=r"`--time-unit` must be one of \['cpu', 'ref'\], got 'wall'"):
        hb.Clock("wall", "etth1")


def test_a_timed_trial_reports_clock_time_without_the_tuners_work_inside_report(hb, monkeypatch):
    """Per-epoch and final ``time`` come from the clock; CPU spent inside ``report`` is not trial time."""
    clock, cpu = _clock_with_fake_kernel(hb, monkeypatch, [0.1] * 10)
    monkeypatch.setattr(hb, "CLOCK", clock)

    def fake_train(params, report=None, epochs=3, seed=0):
        for epoch in range(1, epochs + 1):
            cpu.t += 1.0
            report(epoch, {"val_mse": 1.0 / epoch, "time": -1.0})  # the task's own time is replaced
        return {"val_mse": 1.0 / epochs, "time": -1.0}

    monkeypatch.setattr(hb, "_train_fn", lambda task: fake_train)
    seen = []

    def report(step, metrics):
        seen.append(metrics["time"])
        cpu.t += 5.0  # the tuner's work (storage, pruner), not the trial's

    box: dict = {}
    out = hb.timed_train("etth1", {}, report, epochs=3, spent=box)
    unit = hb.ref_scale("etth1") / 0.1
    np.testing.assert_allclose(seen, [unit, 2 * unit, 3 * unit])
    assert out["time"] == pytest.approx(3 * unit) and box["time"] == out["time"]


def test_a_pruned_timed_trial_still_leaves_its_time_for_the_budget(hb, monkeypatch):
    clock, cpu = _clock_with_fake_kernel(hb, monkeypatch, [0.1] * 10)
    monkeypatch.setattr(hb, "CLOCK", clock)

    class Pruned(Exception):
        pass

    def fake_train(params, report=None, epochs=3, seed=0):
        cpu.t += 2.0
        report(1, {"val_mse": 1.0})
        raise AssertionError("a pruned trial stops at its report")

    def report(step, metrics):
        raise Pruned

    monkeypatch.setattr(hb, "_train_fn", lambda task: fake_train)
    box: dict = {}
    with pytest.raises(Pruned):
        hb.timed_train("etth1", {}, report, epochs=3, spent=box)
    assert box["time"] == pytest.approx(2.0 * hb.ref_scale("etth1") / 0.1)


def test_the_reference_kernel_trains_on_one_thread_and_gives_the_callers_threads_back(hb):
    import time

    import torch

    threads = torch.get_num_threads()
    kernel = hb._ref_kernel("digits")
    torch.set_num_threads(2)
    try:
        c0 = time.process_time()
        kernel()
        assert time.process_time() > c0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_a_results_file_timed_in_another_unit_is_refused(hb, tmp_path, monkeypatch):
    out = tmp_path / "runs.jsonl"
    row = {
        "kind": "run",
        "task": "digits",
        "method": "ht",
        "seed": 0,
        "trials": [],
        "size": "digits_size=small",
    }
    out.write_text(json.dumps(row) + "\n")
    argv = ["hypertuner_budget.py", "--time-unit", "ref", "--summary-only", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit, match=r"timed in \['cpu'\], not --time-unit 'ref'"):
        hb.main()


def _run(method, seed, trials):
    trs = [{"number": i, "state": st, "values": [acc, t], "cpu": t} for i, (st, acc, t) in enumerate(trials)]
    return {"kind": "run", "task": "digits", "method": method, "seed": seed, "trials": trs,
            "trial_cpu": sum(t for _, _, t in trials)}  # fmt: skip


def test_cross_run_shares_pair_every_ht_run_with_every_other_run_once(hb):
    a = _run("ht", 0, [("COMPLETE", 0.5, 1.0), ("COMPLETE", 0.9, 1.0)])
    b = _run("ht", 1, [("COMPLETE", 0.9, 1.0), ("COMPLETE", 0.5, 1.0)])
    # ht_es: a pruned trial's time counts, its partial values never enter the hypervolume
    c = _run("ht_es", 0, [("PRUNED", 0.99, 0.5), ("COMPLETE", 0.9, 0.5)])
    x = hb.cross_run_shares([a, b, c, dict(a)])  # `a` recorded twice counts once
    # b reaches a's final HV after its first trial (1 of a's 2 s); a reaches b's only at its end
    assert sorted(x["null"]) == [0.5, 1.0]
    assert x["test"] == [0.5, 0.5]  # c reaches either at 1 s of 2
    with pytest.raises(ValueError, match=r"at least two 'ht' runs, got 1"):
        hb.cross_run_shares([a, c])


def test_cross_run_shares_count_a_run_that_never_reaches_as_infinite(hb):
    a = _run("ht", 0, [("COMPLETE", 0.9, 1.0)])
    b = _run("ht", 1, [("COMPLETE", 0.5, 1.0)])
    x = hb.cross_run_shares([a, b])
    assert sorted(x["null"]) == [1.0, float("inf")]


def test_a_tuning_run_on_the_ref_clock_spends_its_budget_in_reference_seconds(hb, tmp_path):
    """End to end (digits, small size): every trial's time is on the clock, the budget is their sum, and
    a pruned trial's time is its last reported one."""
    hb.set_time_unit("ref", "digits")
    pruner = {"name": "pareto_halving", "min_resource": 1, "reduction_factor": 2, "min_peers": 2}
    r = hb.run_method("ht_es", 0, 1.5, 2, tmp_path, 2, pruner, "digits")
    trials = r["trials"]
    assert len(trials) >= 2 and r["probe_cpu"] > 0
    # a pruned trial's recorded time is at its last report; the budget also counts the unwinding after it
    # (microseconds; up to 0.17 ms measured under load), hence 1 ms per trial
    assert r["trial_cpu"] == pytest.approx(sum(t["cpu"] for t in trials), rel=0, abs=1e-3 * len(trials))
    assert r["trial_cpu"] >= 1.5
    for t in trials:
        times = [c[-1] for c in t["curve"]]
        assert times == sorted(times) and t["cpu"] == pytest.approx(times[-1], rel=0.05, abs=1e-3)
    ends = [t["total_cpu_at_end"] for t in sorted(trials, key=lambda t: t["number"])]
    assert ends == sorted(ends) and ends[-1] <= r["trial_cpu"] + r["tuner_cpu_outside_trials"] + 1e-6


def test_cross_runs_on_a_file_with_one_ht_run_exits_naming_what_is_missing(hb, tmp_path, monkeypatch):
    out = tmp_path / "runs.jsonl"
    rows = [_run("ht", 0, [("COMPLETE", 0.9, 1.0)]), _run("ht_es", 0, [("COMPLETE", 0.9, 0.5)])]
    extra = {"size": "digits_size=small", "tuner_cpu_outside_trials": 0.0, "wall": 1.0}
    out.write_text("".join(json.dumps({**r, **extra}) + "\n" for r in rows))
    argv = [
        "hypertuner_budget.py",
        "--summary-only",
        "--methods",
        "ht",
        "ht_es",
        "--cross-runs",
        "--out",
        str(out),
    ]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit, match=r"--cross-runs: .*at least two 'ht' runs, got 1"):
        hb.main()
