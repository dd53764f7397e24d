"""Optional dependencies stay optional; actuators are explicit, root-only and restore what they change."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lightning_addons.tuner import CPUFrequencyActuator, HyperTuner

ROOT = str(Path(__file__).resolve().parents[2])


def test_importing_the_tuner_needs_no_optional_dependency_and_errors_name_the_extra():
    code = textwrap.dedent("""
        import sys
        for name in ("botorch", "gpytorch", "optuna"):
            sys.modules[name] = None  # as if not installed
        import lightning_addons.tuner as t
        from lightning_addons.callbacks import EnergyMeter
        tuner = t.HyperTuner(space={"x": {"type": "float", "low": 0, "high": 1}}, objectives=["f:min"],
                             trial_fn=lambda p: {"f": p["x"]}, storage="sqlite:///:memory:", progress=False)
        try:
            tuner.run()
        except ModuleNotFoundError as err:
            print("ERR", err)
        try:
            opt = t.ADUMBO(1, ["minimize"], n_init=2)
            opt.tell([[0.1], [0.9]], [[1.0], [2.0]])
            opt.ask()
        except ModuleNotFoundError as err:
            print("ERR2", err)
    """)
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ERR HyperTuner needs the optional dependency 'optuna'" in out.stdout
    assert "lightning-addons[tune]" in out.stdout
    assert "ERR2 ADUMBO needs the optional dependency 'botorch'" in out.stdout


def _fake_cpufreq(root: Path, n=2, value="2400000"):
    for i in range(n):
        d = root / f"cpu{i}" / "cpufreq"
        d.mkdir(parents=True)
        (d / "scaling_max_freq").write_text(value)


def test_cpu_frequency_actuator_applies_and_restores_and_needs_root(tmp_path, monkeypatch):
    _fake_cpufreq(tmp_path)
    act = CPUFrequencyActuator(tmp_path)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    act.apply({"cpu_max_freq_khz": 1200000})
    assert (tmp_path / "cpu1" / "cpufreq" / "scaling_max_freq").read_text() == "1200000"
    act.restore()
    assert (tmp_path / "cpu1" / "cpufreq" / "scaling_max_freq").read_text() == "2400000"
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(PermissionError, match="needs root"):
        act.apply({"cpu_max_freq_khz": 1200000})
    with pytest.raises(FileNotFoundError, match="cpufreq is not exposed"):
        monkeypatch.setattr(os, "geteuid", lambda: 0)
        CPUFrequencyActuator(tmp_path / "none").apply({"cpu_max_freq_khz": 1})


def test_actuator_parameters_are_off_by_default_and_applied_around_each_trial(tmp_path, monkeypatch):
    space = {
        "x": {"type": "float", "low": 0, "high": 1},
        "cpu_max_freq_khz": {"type": "categorical", "choices": [1200000, 2400000], "layer": "system"},
    }
    with pytest.raises(ValueError, match="unknown system parameter 'cpu_max_freq_khz'"):
        HyperTuner(space=space, objectives=["f:min"], trial_fn=lambda p: {"f": p["x"]})
    _fake_cpufreq(tmp_path)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    seen = []
    f = tmp_path / "cpu0" / "cpufreq" / "scaling_max_freq"

    def fn(p):
        seen.append((p["cpu_max_freq_khz"], int(f.read_text())))
        return {"f": p["x"]}

    HyperTuner(
        space=space,
        objectives=["f:min"],
        trial_fn=fn,
        actuators=[CPUFrequencyActuator(tmp_path)],
        algorithm="sobol",
        n_trials=4,
        storage="sqlite:///:memory:",
        progress=False,
        mopir=False,
    ).run()
    assert all(a == b for a, b in seen) and f.read_text() == "2400000"
