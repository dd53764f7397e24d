"""The CacheFL experiment can be sized from the command line, saves after every method and resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightning_addons.cli import main

pytest.importorskip("open_clip")
CONFIG = Path(__file__).resolve().parents[2] / "examples" / "configs" / "cachefl_digits.yaml"
SMALL = [
    "--cachefl.alphas",
    "[0.5]",
    "--cachefl.seeds",
    "[0]",
    "--cachefl.rounds",
    "1",
    "--cachefl.local_epochs",
    "1",
]


def _federate(out: Path, *extra: str):
    main(["federate", "--config", str(CONFIG), "--out", str(out), *SMALL, *extra])
    return json.loads(out.read_text())


def test_a_sized_cachefl_run_writes_its_results_and_a_second_run_resumes_it(tmp_path, capsys):
    out = tmp_path / "cachefl.json"
    first = _federate(out, "--cachefl.methods", "[zero_shot,cachefl]")
    assert first["complete"] and first["methods"] == ["zero_shot", "cachefl"]
    (row,) = first["rows"]
    assert {"zero_shot", "cachefl", "cachefl_bytes"} <= set(row) and "local_only" not in row
    assert "cachefl" in first["summary"]["0.5"]
    capsys.readouterr()
    # more methods on the same config: the finished CacheFL unit is reused, centralised runs
    second = _federate(out, "--cachefl.methods", "[zero_shot,cachefl,centralised]")
    printed = capsys.readouterr().out
    assert "cachefl already in" in printed and "centralised ..." in printed
    (row2,) = second["rows"]
    assert row2["cachefl"] == row["cachefl"] and "centralised" in row2


def test_resuming_a_results_file_of_another_config_is_refused_naming_the_keys(tmp_path, capsys):
    out = tmp_path / "cachefl.json"
    out.write_text(json.dumps({"config": {"rounds": 7}, "rows": []}))
    with pytest.raises(SystemExit):
        _federate(out, "--cachefl.methods", "[zero_shot]")
    err = capsys.readouterr().err
    assert "holds results of another CacheFL config" in err and "'rounds'" in err and "resume false" in err


def test_an_unknown_method_is_rejected_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit):
        _federate(tmp_path / "x.json", "--cachefl.methods", "[zero_shot,cachfl]")
    err = capsys.readouterr().err
    assert "`methods` must be a non-empty list of" in err and "cachfl" in err
