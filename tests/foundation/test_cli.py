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
        cli_main(
            [
                "fit",
                "--model",
                "ImageClassifier",
                "--model.model",
                "LeNet5",
                "--data",
                "DigitsDataModule",
                "--print_config",
            ]
        )
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

        cli.COMMANDS.pop("fake")
    assert seen["argv"] == ["--x", "1"]


def test_bad_config_value_is_reported_with_the_argument_name(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lightning_addons.cli",
            "fit",
            "--config",
            str(ROOT / "examples/configs/digits_lenet.yaml"),
            "--data.init_args.channels",
            "2",
            "--print_config",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert "channels" in proc.stderr


def test_digits_lenet_demo_trains_to_090_test_accuracy(tmp_path):
    """The README's demo command, end to end on CPU (about 10 s)."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lightning_addons.cli",
            "fit",
            "--config",
            str(ROOT / "examples/configs/digits_lenet.yaml"),
            "--trainer.default_root_dir",
            str(tmp_path),
            "--trainer.enable_progress_bar",
            "false",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if "test_acc" in ln)
    acc = float(line.replace("│", " ").split()[-1])
    assert acc >= 0.9, proc.stdout


def test_help_lists_every_subcommand_without_importing_lightning():
    code = (
        "import sys\nfrom lightning_addons.cli import main\nmain(['--help'])\n"
        "print('LOADED', [m for m in ('lightning', 'jsonargparse', 'torch') if m in sys.modules])"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for sub in ("fit", "validate", "test", "predict", "tune", "federate"):
        assert re.search(rf"^  {sub}\s+\S", proc.stdout, re.M), f"{sub} missing from --help:\n{proc.stdout}"
    assert "LOADED []" in proc.stdout


def test_every_registered_command_target_exists():
    import importlib

    from lightning_addons.cli import COMMANDS

    for name, cmd in COMMANDS.items():
        module, func = cmd.target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), name
        assert cmd.help, f"{name} has no help line"


@pytest.mark.parametrize("sub", ["tune", "federate"])
def test_malformed_yaml_is_one_line_naming_file_and_line(sub, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  class_path: LeNet5\n  init_args: {width: 1\nfederation: []\n")
    with pytest.raises(SystemExit) as exc:
        main([sub, "--config", str(bad)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert re.match(rf"lightning-addons {sub}: error: {re.escape(str(bad))}:4:\d+: malformed YAML: ", err), (
        err
    )


def test_unknown_short_class_name_suggests_close_matches():
    from lightning_addons.resolve import resolve_class

    with pytest.raises(
        ValueError,
        match=r"Unknown `class_path` 'ImageClasifier': did you mean 'ImageClassifier'( or '\w+')*\?",
    ):
        resolve_class("ImageClasifier")
    with pytest.raises(ValueError, match=r"Cannot import `class_path` 'lightning_addons.modules.Nope'"):
        resolve_class("lightning_addons.modules.Nope")


def test_fit_tune_and_federate_share_one_resolver():
    from lightning_addons import resolve
    from lightning_addons.federated import config as fed_config
    from lightning_addons.tuner import trial

    assert trial.resolve_class is resolve.resolve_class is fed_config.resolve_class
    assert trial.instantiate is resolve.instantiate is fed_config.instantiate


def test_a_config_that_is_not_a_mapping_is_rejected_naming_the_file(tmp_path):
    from lightning_addons.resolve import ConfigError, load_yaml

    path = tmp_path / "list.yaml"
    path.write_text("- model\n- data\n")
    with pytest.raises(
        ConfigError, match=r"list.yaml: the config must be a YAML mapping \(key: value\), got a list"
    ):
        load_yaml(path)
    (tmp_path / "empty.yaml").write_text("")
    assert load_yaml(tmp_path / "empty.yaml") == {}
