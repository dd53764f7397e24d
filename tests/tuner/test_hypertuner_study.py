"""HyperTuner on an Optuna study with cheap in-process objectives: failures, fail-fast, resume, samplers."""

from __future__ import annotations

import math
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lightning_addons.tuner import HyperTuner, SearchSpace, write_report

SPACE = {
    "x": {"type": "float", "low": 0.0, "high": 1.0, "default": 0.5},
    "y": {"type": "float", "low": 1e-3, "high": 1.0, "log": True, "default": 0.1},
    "batch_size": {"type": "categorical", "choices": [16, 32, 64], "default": 32, "layer": "system"},
}


def zdt_like(p):
    g = 1 + p["y"] + 0.01 * p["batch_size"] / 64
    return {"f1": p["x"], "f2": g * (1 - math.sqrt(p["x"] / g)), "val_acc": 1 - p["y"]}


def _tuner(tmp_path, fn=zdt_like, **kw):
    kw.setdefault("n_trials", 8)
    kw.setdefault("n_init", 5)
    return HyperTuner(
        space=SPACE,
        objectives=["f1:min", "f2:min"],
        trial_fn=fn,
        storage=f"sqlite:///{tmp_path}/s.db",
        output_dir=tmp_path,
        progress=False,
        **kw,
    )


def test_failed_and_nan_trials_are_recorded_and_the_study_goes_on(tmp_path):
    calls = {"n": 0}

    def flaky(p):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("CUDA out of memory (simulated)")
        if calls["n"] == 4:
            return {"f1": float("nan"), "f2": 1.0}
        return zdt_like(p)

    res = _tuner(tmp_path, flaky).run()
    states = [h["state"] for h in res.history]
    assert len(states) == 8 and states.count("FAIL") == 2 and states.count("COMPLETE") == 6
    errors = [h["error"] for h in res.history if h["state"] == "FAIL"]
    assert any("out of memory" in e for e in errors) and any("non-finite" in e for e in errors)
    assert res.pareto and all(h["state"] == "COMPLETE" for h in res.pareto)
    assert res.history[0]["params"] == SearchSpace(SPACE).defaults()  # trial 0 = the defaults
    assert res.mopir is not None and set(res.mopir.order) == set(SPACE)
    paths = write_report(res, tmp_path / "report", space=SearchSpace(SPACE))
    text = paths["summary"].read_text()
    assert "Failed trials" in text and "out of memory" in text and "## Pareto set" in text
    assert {"csv", "pareto", "hypervolume", "summary"} <= set(paths)
    assert "mopir" not in paths and "fitted on 5 finished trials" in text  # too few to rank: withheld
    assert len(paths["csv"].read_text().splitlines()) == 9


def test_an_objective_that_is_never_logged_fails_fast_listing_the_logged_names(tmp_path):
    calls = {"n": 0}

    def fn(p):
        calls["n"] += 1
        return {"f1": p["x"], "val_loss": 1.0}

    tuner = HyperTuner(
        space=SPACE,
        objectives=["f1:min", "val_acc:max"],
        trial_fn=fn,
        n_trials=5,
        storage=f"sqlite:///{tmp_path}/s.db",
        progress=False,
    )
    with pytest.raises(
        ValueError, match=r"\['val_acc'\] were never logged.*logged names: \['f1', 'val_loss'\]"
    ):
        tuner.run()
    assert calls["n"] == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"algorithm": "bohb"}, r"`algorithm` must be one of \['adumbo', 'random', 'sobol', 'qnehvi'"),
        ({"n_trials": 0}, "`n_trials` must be an integer >= 1, got 0"),
        ({"objectives": []}, "`objectives` must name at least one objective"),
        ({"objectives": ["f1:up"]}, r"`direction` must be one of \['minimize', 'maximize'\]"),
        ({"space": {}}, "search space is empty"),
        (
            {"space": {"gpu_clock": {"type": "int", "low": 1, "high": 2, "layer": "system"}}},
            "unknown system parameter 'gpu_clock'",
        ),
        (
            {"space": {"devices": {"type": "categorical", "choices": [1, 2], "layer": "system"}}},
            "more than one device exists",
        ),
        ({"trial_fn": None}, "give exactly one of `model`"),
        ({"trial_fn": None, "model": type("Local", (), {"__module__": "__main__"})}, "defined in __main__"),
    ],
)
def test_hypertuner_rejects_bad_input(tmp_path, kwargs, match):
    args = {
        "space": SPACE,
        "objectives": ["f1:min"],
        "trial_fn": zdt_like,
        "storage": f"sqlite:///{tmp_path}/s.db",
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        HyperTuner(**args)


def test_optuna_samplers_run_through_the_same_study_api(tmp_path):
    res = _tuner(tmp_path, algorithm="tpe", n_trials=6, mopir=False).run()
    assert len(res.history) == 6 and len({tuple(sorted(h["params"].items())) for h in res.history}) == 6


def test_killed_run_resumes_keeping_every_finished_trial_and_runs_the_lost_one_again(tmp_path):
    db = tmp_path / "s.db"
    script = textwrap.dedent(f"""
        import math, os, signal
        from lightning_addons.tuner import HyperTuner
        SPACE = {SPACE!r}
        done = []
        def fn(p):
            if len(done) == 4:
                os.kill(os.getpid(), signal.SIGKILL)  # killed in the middle of trial 5
            done.append(p)
            return {{"f1": p["x"], "f2": 1 - math.sqrt(p["x"]) + p["y"]}}
        HyperTuner(space=SPACE, objectives=["f1:min", "f2:min"], trial_fn=fn, n_trials=7, n_init=5,
                   storage="sqlite:///{db}", progress=False, heartbeat_interval=1).run()
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert proc.returncode == -9, proc.stderr[-2000:]
    import optuna

    before = optuna.load_study(study_name="hypertuner", storage=f"sqlite:///{db}")
    finished = {t.number: t.values for t in before.trials if t.state.name == "COMPLETE"}
    assert len(finished) == 4 and [t.state.name for t in before.trials].count("RUNNING") == 1
    lost_params = before.trials[4].params

    def fn(p):
        return {"f1": p["x"], "f2": 1 - math.sqrt(p["x"]) + p["y"]}

    res = HyperTuner(
        space=SPACE,
        objectives=["f1:min", "f2:min"],
        trial_fn=fn,
        n_trials=7,
        n_init=5,
        storage=f"sqlite:///{db}",
        progress=False,
        heartbeat_interval=1,
    ).run()
    after = {h["number"]: h for h in res.history}
    for number, values in finished.items():
        assert after[number]["state"] == "COMPLETE" and list(after[number]["values"].values()) == values
    # the killed worker's trial: failed with its real reason at once (no heartbeat wait), not counted
    assert after[4]["state"] == "FAIL" and after[4]["lost"]
    assert re.match(r"lost: its worker process \d+ on .* died", after[4]["error"])
    # ... and run again with the same parameters, so 7 trials count, all complete
    assert after[5]["params"] == lost_params and after[5]["state"] == "COMPLETE"
    assert len(res.history) == 8 and sum(h["state"] == "COMPLETE" for h in res.history) == 7


def test_a_sampler_error_is_raised_and_leaves_no_running_trial(tmp_path, monkeypatch):
    import optuna

    from lightning_addons.tuner import sampler as sampler_mod

    real = sampler_mod.make_optimizer

    def broken_after_design(name, dim, directions, **kw):
        opt = real(name, dim, directions, **kw)
        ask = opt.ask

        def ask_or_fail(n=1, pending=None):
            if opt.n_asked >= 2:
                raise RuntimeError("surrogate exploded")
            return ask(n, pending)

        opt.ask = ask_or_fail
        return opt

    monkeypatch.setattr(sampler_mod, "make_optimizer", broken_after_design)
    with pytest.raises(
        RuntimeError, match="the sobol sampler failed for trial 2: RuntimeError: surrogate exploded"
    ):
        _tuner(tmp_path, algorithm="sobol", mopir=False).run()
    study = optuna.load_study(study_name="hypertuner", storage=f"sqlite:///{tmp_path}/s.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "FAIL"]
    assert "the worker stopped: RuntimeError: the sobol sampler failed" in study.trials[2].user_attrs["error"]


def test_a_running_trial_of_a_silent_worker_on_another_host_is_failed_after_the_grace_period(tmp_path):
    import optuna

    from lightning_addons.tuner.tuner import WORKER_ATTR

    def make():
        return _tuner(tmp_path, algorithm="sobol", n_trials=2, mopir=False, heartbeat_interval=1)

    study = make().create_study()
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0.0, 1.0)})
    study._storage.set_trial_system_attr(trial._trial_id, WORKER_ATTR, {"host": "elsewhere", "pid": 1})
    study._storage.record_heartbeat(trial._trial_id)
    assert make()._n_counted(study, (optuna.trial.TrialState.RUNNING,)) == 1
    make()._reap(study)  # its heartbeat is fresh: a live worker elsewhere, left alone
    assert study.trials[0].state.name == "RUNNING"
    time.sleep(3.5)  # grace period 2 x heartbeat_interval, plus SQLite now()'s 1 s resolution
    res = make().run()
    first = res.history[0]
    assert first["state"] == "FAIL" and first["lost"]
    assert (
        first["error"]
        == "lost: its worker elsewhere:1 sent no heartbeat for more than 2 s (it died or lost the storage)"
    )
    assert [h["state"] for h in res.history] == ["FAIL", "COMPLETE", "COMPLETE"]
