"""The lightning-addons CLI: every example config parses and round-trips; the digits demo trains."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lightning_addons.cli import cli_main, extra_commands, main, register_command

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch):
    """LightningCLI warns when pytest's own argv is present beside `args`."""
    monkeypatch.setattr(sys, "argv", ["lightning-addons"])


CONFIGS = sorted((ROOT / "examples" / "configs").glob("*.yaml"))


def _subcommand(cfg: Path) -> str:
    """The subcommand a config is for, from its header line ``#   lightning-addons SUB --config ...``."""
    for line in cfg.read_text().splitlines()[:10]:
        m = re.search(r"lightning-addons (\w+) --config", line)
        if m:
            return m.group(1)
    return "fit"


@pytest.mark.parametrize("cfg", CONFIGS, ids=[c.name for c in CONFIGS])
def test_every_example_config_parses_and_round_trips(cfg, tmp_path, capsys):
    sub = _subcommand(cfg)
    if sub != "fit":
        assert sub in extra_commands(), f"{cfg.name} names unknown subcommand {sub!r}"
        with pytest.raises(SystemExit) as exc:
            main([sub, "--config", str(cfg), "--print_config"])
        assert exc.value.code == 0
        assert yaml.safe_load(capsys.readouterr().out)
        return
    with pytest.raises(SystemExit) as exc:
        cli_main(["fit", "--config", str(cfg), "--print_config"])
    assert exc.value.code == 0
    printed = capsys.readouterr().out
    dumped = tmp_path / "printed.yaml"
    dumped.write_text(printed)
    with pytest.raises(SystemExit) as exc:
        cli_main(["fit", "--config", str(dumped), "--print_config"])
    assert exc.value.code == 0
    assert yaml.safe_load(capsys.readouterr().out) == yaml.safe_load(printed)


def test_short_class_names_resolve(capsys):
    with pytest.raises(SystemExit):
        cli_main(["fit", "--model", "ImageClassifier", "--model.model", "LeNet5", "--data", "DigitsDataModule", "--print_config"])
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["model"]["class_path"] == "lightning_addons.modules.ImageClassifier"
    assert cfg["model"]["init_args"]["model"]["class_path"] == "lightning_addons.modules.nn.LeNet5"
    assert cfg["data"]["class_path"] == "lightning_addons.datamodules.DigitsDataModule"


def test_registered_extra_command_receives_its_argv(monkeypatch):
    seen = {}
    module = type(sys)("fake_cmd_module")
    module.run = lambda argv: seen.setdefault("argv", argv)
    monkeypatch.setitem(sys.modules, "fake_cmd_module", module)
    register_command("fake", "fake_cmd_module:run")
    try:
        main(["fake", "--x", "1"])
    finally:
        from lightning_addons import cli

        cli._EXTRA_COMMANDS.pop("fake")
    assert seen["argv"] == ["--x", "1"]


def test_bad_config_value_is_reported_with_the_argument_name(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "lightning_addons.cli", "fit", "--config", str(ROOT / "examples/configs/digits_lenet.yaml"),
         "--data.init_args.channels", "2", "--print_config"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert "channels" in proc.stderr


def test_digits_lenet_demo_trains_to_090_test_accuracy(tmp_path):
    """The README's demo command, end to end on CPU (about 10 s)."""
    proc = subprocess.run(
        [sys.executable, "-m", "lightning_addons.cli", "fit", "--config", str(ROOT / "examples/configs/digits_lenet.yaml"),
         "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if "test_acc" in ln)
    acc = float(line.replace("│", " ").split()[-1])
    assert acc >= 0.9, proc.stdout
