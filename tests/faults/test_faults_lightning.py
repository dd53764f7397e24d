"""Faults a Lightning user hits, each run in a fresh process as a user would (``_faults_lightning_world.py``):
a pruning resume with other settings or without the callback, an unwritable auditor ``save_dir``, a time
series with inf, all NaN or a constant channel, and malformed YAML given to ``tune``/``federate``/``fit``.
Each ends in an exact recovery (exit 0, the masks unchanged) or a clear error (exit != 0, naming what is
wrong) before any training step; none in exit 0 with a changed result."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _faults_lightning_world import write_pruned_checkpoint  # noqa: E402

SCRIPT = str(Path(__file__).with_name("_faults_lightning_world.py"))


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=cwd)


@pytest.fixture(scope="module")
def pruned_checkpoint(tmp_path_factory) -> tuple[Path, dict[str, list[int]]]:
    return write_pruned_checkpoint(tmp_path_factory.mktemp("pruned"))


def test_resume_with_another_pruning_criterion_and_settings_keeps_the_masks_exactly(
    pruned_checkpoint, tmp_path
):
    path, pruned = pruned_checkpoint
    other = dict(criterion="l1", amount=1, epochs=[9], max_fraction=0.2)
    out = tmp_path / "resumed.json"
    res = _run(SCRIPT, "prune-resume", str(path), json.dumps(other), str(out), cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(out.read_text())
    assert got["epoch"] == 4  # it trained on, epochs 2-3
    assert got["pruned_filters"] == pruned and pruned  # the masks came back from the checkpoint
    assert set(got["pruned_nonzero"].values()) == {0}  # the pruned filters did not grow back


def test_resume_with_the_pruning_callback_left_out_is_a_clear_error(pruned_checkpoint, tmp_path):
    path, _ = pruned_checkpoint
    res = _run(SCRIPT, "prune-resume", str(path), "null", str(tmp_path / "out.json"), cwd=tmp_path)
    assert res.returncode != 0
    assert "Missing key" in res.stderr and "weight_orig" in res.stderr, res.stderr[-3000:]
    assert not (tmp_path / "out.json").exists()


def test_an_unwritable_auditor_save_dir_fails_before_the_first_training_step(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    marker, cwd = tmp_path / "stepped", tmp_path / "cwd"
    res = _run(SCRIPT, "audit-unwritable", str(blocker / "out"), str(marker), cwd=cwd)
    assert res.returncode != 0
    assert f"cannot write to `save_dir` {str(blocker / 'out')!r}" in res.stderr, res.stderr[-3000:]
    assert not marker.exists()  # no training step ran
    assert list(cwd.iterdir()) == []  # and nothing was written to the working directory instead


@pytest.mark.parametrize(
    "fault, error, masked",
    [
        ("inf", r"`values` contains 1 inf value\(s\), the first at row 30, channel \(node 1", "masked"),
        ("all_nan", r"every channel is never observed or constant in the training rows", "error"),
        ("constant_channel", r"\(node 2, feature 0\) is constant in the training rows", "masked"),
    ],
    ids=["inf", "all_nan", "constant_channel"],
)
def test_a_bad_time_series_is_a_clear_error_naming_row_and_channel_or_masked(fault, error, masked, tmp_path):
    import re

    out = tmp_path / "mask.json"
    res = _run(SCRIPT, "series", fault, str(out), cwd=tmp_path)
    assert res.returncode != 0 and "setup passed" not in res.stdout
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("ValueError: ") and re.search(error, last), res.stderr[-3000:]
    mask = json.loads(out.read_text())["mask"]
    if masked == "error":  # nothing left to learn: an error even with invalid="mask"
        assert re.search(error, mask["error"])
    else:  # invalid="mask": the bad values are missing, never observed, the scaler finite
        assert "error" not in mask and mask["train_windows"] > 0
        assert mask["observed_inf"] == 0 and mask["finite_scaler"]
        assert mask["masked_channels"] == (
            [[2, 0, "constant in the training rows"]] if fault != "inf" else []
        )


@pytest.mark.parametrize("sub", ["tune", "federate", "fit"])
def test_malformed_yaml_exits_2_naming_the_line_before_any_work(sub, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  class_path: LeNet5\n  init_args: {width: 1\nfederation: []\n")
    res = _run("-m", "lightning_addons.cli", sub, "--config", str(bad), cwd=tmp_path / "cwd")
    assert res.returncode == 2, res.stderr[-3000:]
    err = res.stderr.strip()
    if sub == "fit":  # LightningCLI's own message: the line and column, not the file name
        assert "Problems parsing config" in err and "line 4, column 11" in err
    else:  # one line naming the file, line and column
        assert (
            err
            == f"lightning-addons {sub}: error: {bad}:4:11: malformed YAML: expected ',' or '}}', but got ':'"
        )
    assert list((tmp_path / "cwd").iterdir()) == []  # nothing started: no logs, no checkpoints, no study
