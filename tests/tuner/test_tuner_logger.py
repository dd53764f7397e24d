"""A tuning run logs each finished trial to a Lightning logger, as the trial finishes."""

from __future__ import annotations

import csv

import pytest

from lightning_addons.tuner import HyperTuner

SPACE = {"x": {"type": "float", "low": 0.0, "high": 1.0, "default": 0.5}}


def _fn(p):
    if p["x"] > 0.9:
        raise RuntimeError("simulated failure")
    return {"f1": p["x"], "f2": (1 - p["x"]) ** 2, "extra": 3.0}


@pytest.mark.parametrize("as_config", [False, True])
def test_each_finished_trial_is_logged_with_its_objectives_at_its_number(tmp_path, as_config):
    from lightning.pytorch.loggers import CSVLogger

    save_dir = str(tmp_path / "logs")
    logger = (
        {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": save_dir}}
        if as_config
        else CSVLogger(save_dir=save_dir)
    )
    res = HyperTuner(
        space=SPACE, objectives=["f1:min", "f2:min"], trial_fn=_fn, algorithm="random", n_trials=5,
        storage=f"sqlite:///{tmp_path}/s.db", output_dir=tmp_path, progress=False, mopir=False, logger=logger,
        max_consecutive_failures=None,
    ).run()  # fmt: skip
    rows = list(csv.DictReader(next((tmp_path / "logs").rglob("metrics.csv")).open()))
    assert sorted(int(r["step"]) for r in rows) == [h["number"] for h in res.history]
    by_step = {int(r["step"]): r for r in rows}
    for h in res.history:
        row = by_step[h["number"]]
        assert float(row["trial_failed"]) == float(h["state"] == "FAIL")
        if h["state"] == "COMPLETE":
            assert float(row["f1"]) == pytest.approx(h["values"]["f1"]) and float(row["extra"]) == 3.0


def test_a_logger_that_is_not_a_logger_is_rejected_naming_the_argument(tmp_path):
    with pytest.raises(ValueError, match="`logger` must be a Lightning logger"):
        HyperTuner(space=SPACE, objectives=["f1:min"], trial_fn=_fn, logger="csv", output_dir=tmp_path)


def test_without_a_terminal_each_finished_trial_prints_one_plain_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("LIGHTNING_ADDONS_PROGRESS", raising=False)  # capsys' stdout is not a terminal
    HyperTuner(
        space=SPACE,
        objectives=["f1:min", "f2:min"],
        trial_fn=lambda p: {"f1": p["x"], "f2": 1 - p["x"]},
        algorithm="random",
        n_trials=3,
        storage=f"sqlite:///{tmp_path}/s.db",
        output_dir=tmp_path,
        mopir=False,
        seed=0,
    ).run()
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("HyperTuner:")]
    assert lines[0] == "HyperTuner: 0/3 trials"
    assert [ln.split("  ")[1].split(";")[0] for ln in lines[1:]] == [
        "trial 0 COMPLETE",
        "trial 1 COMPLETE",
        "trial 2 COMPLETE",
    ]
    assert all(" best f1=" in ln and " f2=" in ln for ln in lines[1:])
