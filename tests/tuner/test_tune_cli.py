"""`lightning-addons tune` end to end: Lightning trials in fresh subprocesses with system knobs applied."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from lightning_addons.cli import extra_commands, main
from lightning_addons.tuner.trial import LightningTrialRunner

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "configs" / "tune_digits.yaml"


def _tiny_config(tmp_path) -> Path:
    cfg = yaml.safe_load(EXAMPLE.read_text())
    cfg["tune"].update(n_trials=2, n_init=2, output_dir=str(tmp_path / "out"), timeout=300)
    cfg["tune"]["space"]["matmul_precision"] = {
        "type": "categorical",
        "choices": ["highest", "medium"],
        "default": "highest",
        "layer": "system",
    }
    cfg["trainer"].update(max_epochs=1, limit_train_batches=4, limit_val_batches=2)
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_tune_cli_runs_lightning_trials_with_system_knobs_applied_and_writes_the_report(tmp_path, capsys):
    import lightning_addons.tuner  # noqa: F401 - registers the command

    assert "tune" in extra_commands()
    main(["tune", "--config", str(_tiny_config(tmp_path)), "--no_progress"])
    out = tmp_path / "out"
    for name in ("summary.md", "trials.csv", "pareto.png", "pareto3d.png", "hypervolume.png"):
        assert (out / name).is_file(), name
    import optuna

    study = optuna.load_study(study_name="tune_digits", storage=f"sqlite:///{out}/study.db")
    trials = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(trials) == 2, [t.user_attrs.get("error") for t in study.trials]
    for t in trials:
        applied = t.user_attrs["applied"]
        assert applied["torch_threads"] == t.params["torch_threads"]
        assert applied["batch_size"] == t.params["batch_size"]
        assert applied["num_workers"] == t.params["num_workers"]
        assert applied["precision"] == t.params["precision"]
        assert applied["matmul_precision"] == t.params["matmul_precision"]
        assert t.user_attrs["energy_source"] in ("rapl", "cpu-time-estimate", "nvml")
        assert 0 <= t.values[0] <= 1 and t.values[1] > 0 and t.values[2] > 0
    assert trials[0].params["lr"] == 1e-3 and trials[0].params["batch_size"] == 64  # trial 0 = the defaults
    assert "Against the default configuration" in capsys.readouterr().out


def test_trial_over_its_timeout_is_killed_and_recorded_as_failed(tmp_path):
    cfg = yaml.safe_load(EXAMPLE.read_text())
    runner = LightningTrialRunner(
        {k: cfg[k] for k in ("model", "data", "trainer")}, {}, timeout=0.5, workdir=tmp_path
    )
    res = runner({}, 0)
    assert res["status"] == "fail" and "timeout after 0.5 s" in res["error"]


def test_tune_cli_rejects_bad_configs(tmp_path, capsys):
    def first_error_line(argv):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        return capsys.readouterr().err.strip().splitlines()[0]

    cfg = yaml.safe_load(EXAMPLE.read_text())
    bad = copy.deepcopy(cfg)
    bad["tune"]["space"]["lr"]["low"] = 0.0
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    assert "log scale needs positive bounds" in first_error_line(["tune", "--config", str(path)])
    bad = copy.deepcopy(cfg)
    bad["tune"]["n_trails"] = 3
    path.write_text(yaml.safe_dump(bad))
    assert "unknown keys in `tune`: ['n_trails']" in first_error_line(["tune", "--config", str(path)])
    missing = first_error_line(["tune", "--config", str(tmp_path / "missing.yaml")])
    assert "--config: no such file" in missing


@pytest.mark.slow  # a trial subprocess plus CodeCarbon's start-up: about 30 s wall on 2 shared cores
def test_a_lightning_trial_metered_by_codecarbon_records_that_source(tmp_path):
    pytest.importorskip("codecarbon")
    cfg = yaml.safe_load(EXAMPLE.read_text())
    cfg["trainer"].update(max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    runner = LightningTrialRunner(
        {k: cfg[k] for k in ("model", "data", "trainer")}, {}, workdir=tmp_path, energy_source="codecarbon"
    )
    res = runner({}, 0)
    assert res["status"] == "ok", res.get("error")
    assert res["energy_source"] == "codecarbon" and res["energy"] > 0


def test_energy_source_is_checked_before_any_trial():
    from lightning_addons.tuner import HyperTuner

    space = {"x": {"type": "float", "low": 0.0, "high": 1.0}}
    kw = {"space": space, "objectives": ["f:min"], "trial_fn": lambda p: {"f": p["x"]}}
    with pytest.raises(ValueError, match=r"`energy_source` must be one of \['auto', .*\], got 'zeus'"):
        HyperTuner(**kw, energy_source="zeus")
    with pytest.raises(ValueError, match=r"`trial_fn` is metered by the CPU-time estimate.*got 'codecarbon'"):
        HyperTuner(**kw, energy_source="codecarbon")
    with pytest.raises(ValueError, match=r"`energy_source` must be one of .*got 'ipmi'"):
        LightningTrialRunner({}, {}, energy_source="ipmi")
