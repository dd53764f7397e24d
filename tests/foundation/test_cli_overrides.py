"""``tune`` and ``federate`` take LightningCLI-style dotted overrides of any config key, validated before
any work, with one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lightning_addons.resolve import ConfigError, apply_overrides, parse_overrides

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "examples" / "configs"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lightning_addons.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )


def test_dotted_overrides_parse_yaml_values_in_both_spellings():
    got = parse_overrides(["--a.b", "2", "--a.c=[x, y]", "--d.e", "null", "--d.f=0.5"])
    assert got == {"a.b": 2, "a.c": ["x", "y"], "d.e": None, "d.f": 0.5}


@pytest.mark.parametrize(
    "args,match",
    [
        (["--rounds", "2"], "unrecognized argument '--rounds'"),
        (["--a.b"], "needs a value"),
        (["--a.b", "[1, 2"], "not valid YAML"),
    ],
)
def test_bad_override_arguments_are_one_line_errors(args, match):
    with pytest.raises(ConfigError, match=match):
        parse_overrides(args)


def test_overrides_reach_nested_keys_and_name_the_missing_parent_with_a_suggestion():
    cfg = {"model": {"class_path": "X", "init_args": {"model": {"class_path": "Y"}}}, "trainer": {}}
    out = apply_overrides(cfg, {"model.init_args.model.init_args.width": 0.5, "trainer.max_epochs": 2})
    assert out["model"]["init_args"]["model"]["init_args"] == {"width": 0.5}
    assert out["trainer"] == {"max_epochs": 2} and cfg["trainer"] == {}  # the input is not modified
    with pytest.raises(ConfigError, match=r"no key 'trainr' in the config; did you mean 'trainer'\?"):
        apply_overrides(cfg, {"trainr.max_epochs": 2})
    with pytest.raises(ConfigError, match=r"not a mapping at key 'class_path' in model"):
        apply_overrides(cfg, {"model.class_path.x": 1})
    assert apply_overrides({}, {"trainer.max_epochs": 1}, sections=("trainer",)) == {
        "trainer": {"max_epochs": 1}
    }


def test_tune_print_config_shows_the_dotted_overrides():
    out = _cli(
        "tune", "--config", str(CONFIGS / "tune_digits.yaml"), "--print_config",
        "--trainer.max_epochs", "1", "--tune.n_trials", "3", "--tune.space.lr.high", "0.01",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    cfg = yaml.safe_load(out.stdout)
    assert cfg["trainer"]["max_epochs"] == 1 and cfg["tune"]["n_trials"] == 3
    assert cfg["tune"]["space"]["lr"]["high"] == 0.01


def test_federate_print_config_shows_the_dotted_overrides():
    out = _cli(
        "federate", "--config", str(CONFIGS / "fedavg_digits.yaml"), "--print_config",
        "--federation.rounds", "2", "--model.init_args.lr", "0.01",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    cfg = yaml.safe_load(out.stdout)
    assert cfg["federation"]["rounds"] == 2 and cfg["model"]["init_args"]["lr"] == 0.01


@pytest.mark.parametrize("command,config", [("tune", "tune_digits.yaml"), ("federate", "fedavg_digits.yaml")])
def test_a_mistyped_override_section_fails_in_one_line_before_any_work(command, config):
    out = _cli(command, "--config", str(CONFIGS / config), "--modle.init_args.lr", "0.1")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "did you mean 'model'?" in lines[0] and "Traceback" not in out.stderr


def test_a_bad_literal_in_a_fit_config_is_reported_in_its_first_line():
    out = _cli(
        "fit",
        "--config",
        str(CONFIGS / "gmm_audit_digits.yaml"),
        "--trainer.callbacks.init_args.criterion",
        "chh",
    )
    assert out.returncode == 2
    first = out.stderr.strip().splitlines()[0]
    assert "criterion" in first and "Got value: chh" in first and "'anomaly'" in first
    assert "usage:" not in out.stderr  # no 50-line usage block in front of it


def test_an_unknown_class_path_in_a_fit_config_suggests_the_close_name(tmp_path):
    cfg = yaml.safe_load((CONFIGS / "digits_lenet.yaml").read_text())
    cfg["model"]["init_args"]["model"]["class_path"] = "LeNet6"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = _cli("fit", "--config", str(path))
    assert out.returncode == 2
    assert "unknown class_path 'LeNet6': did you mean 'LeNet5'?" in out.stderr.strip().splitlines()[0]


def test_a_mistyped_federated_partition_fails_in_one_line_with_a_suggestion():
    out = _cli(
        "federate", "--config", str(CONFIGS / "fedavg_digits.yaml"), "--federation.partition", "dirichlt"
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    first = out.stderr.strip().splitlines()[0]
    assert "`federation.partition` must be one of" in first and "did you mean 'dirichlet'?" in first
