"""End to end: the trial side's repeated measurements (``objective_sem``) reach ADUMBO's surrogate."""

from __future__ import annotations

import numpy as np

from lightning_addons.tuner import HyperTuner, optimizers


def test_repeated_time_standard_errors_are_told_to_adumbo_as_variances(tmp_path, monkeypatch):
    told: list[tuple[np.ndarray, np.ndarray | None]] = []
    original = optimizers.AskTellOptimizer.tell

    def spy(self, X, Y, Yvar=None):
        told.append((np.asarray(Y, float), None if Yvar is None else np.asarray(Yvar, float)))
        return original(self, X, Y, Yvar)

    monkeypatch.setattr(optimizers.AskTellOptimizer, "tell", spy)
    rng = np.random.default_rng(0)

    def fn(p):
        return {"acc": 1.0 - (p["x"] - 0.3) ** 2, "time": 1.0 + p["x"] + 0.1 * rng.standard_normal()}

    tuner = HyperTuner(
        space={"x": {"type": "float", "low": 0.0, "high": 1.0, "default": 0.5}},
        objectives=["acc:max", "time:min"],
        trial_fn=fn,
        algorithm="adumbo",
        n_init=3,
        n_trials=5,
        seed=0,
        repeats={"time": 2},
        storage=f"sqlite:///{tmp_path}/s.db",
        output_dir=tmp_path,
        progress=False,
        mopir=False,
    )
    res = tuner.run()
    done = [t for t in res.study.trials if t.values is not None]
    assert len(done) == 5
    sems = {round(t.values[1], 12): t.user_attrs["objective_sem"][1] for t in done}
    with_var = [(Y, V) for Y, V in told if V is not None and np.isfinite(V[:, 1]).any()]
    assert with_var, "no tell() carried the repeated objective's variances"
    Y, V = with_var[-1]
    assert np.isnan(V[:, 0]).all()  # acc was not repeated
    for y, v in zip(Y[:, 1], V[:, 1]):
        assert v == sems[round(y, 12)] ** 2
