"""benchmarks/ram.py --budget paper with a cut budget: the epoch cap or time limit is applied and recorded, the
best validated weights are tested, and each finished row is in the JSON at once."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "ram.py"


def _script():
    spec = importlib.util.spec_from_file_location("_ram_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _paper(tmp_path, shared_data, *cut):
    out = tmp_path / "paper.json"
    result = _script().main(
        ["--budget", "paper", "--lookbacks", "96", "--horizons", "96", "--seeds", "0", "--models", "DLinear",
         "--data", str(shared_data), "--json", str(out), *cut]
    )  # fmt: skip
    assert json.loads(out.read_text())["runs"] == json.loads(json.dumps(result["runs"]))
    (row,) = result["runs"]
    assert row["model"] == "DLinear" and row["paper_epochs"] == 10 and row["cpu_s"] > 0
    return row


@pytest.mark.slow  # one full DLinear epoch on ETTh1: 10-40 s on a loaded core
def test_paper_budget_epoch_cap_is_applied_and_recorded(tmp_path, shared_data):
    row = _paper(tmp_path, shared_data, "--paper-max-epochs", "1")
    assert row["epochs_run"] == 1 and row["epoch_cap"] == 1 and row["stopped_by"] == "epoch cap"
    assert row["best_epoch"] == 1 and row["test_mse"] > 0


def test_paper_budget_time_limit_stops_training_and_tests_the_validated_weights(tmp_path, shared_data):
    row = _paper(tmp_path, shared_data, "--paper-max-minutes", "0.001")
    assert row["stopped_by"] == "time limit" and row["epochs_run"] == 1 and row["best_epoch"] == 1
    assert row["max_minutes"] == 0.001 and row["epoch_cap"] == 10


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--paper-max-epochs", "0"], "--paper-max-epochs must be a positive integer, got 0"),
        (["--paper-max-minutes", "-1"], "--paper-max-minutes must be positive, got -1.0"),
    ],
)
def test_paper_budget_cuts_must_be_positive(capsys, argv, message):
    with pytest.raises(SystemExit):
        _script().main(["--budget", "paper", *argv])
    assert message in capsys.readouterr().err
