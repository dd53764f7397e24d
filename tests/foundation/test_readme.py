"""README's two set-up commands are the ones CI runs, verbatim."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Set up on a fresh machine", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S)]


def test_readme_has_exactly_two_setup_commands_and_a_demo():
    install, test, demo = _readme_commands()[:3]
    assert "pip install" in install and "[all,dev]" in install
    assert "pytest" in test
    assert demo.startswith(".venv/bin/lightning-addons fit --config examples/configs/")


def test_ci_runs_the_readme_commands_verbatim():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    install, test = _readme_commands()[:2]
    assert install in [line.strip() for line in ci]
    assert test in [line.strip() for line in ci]


def test_demo_config_of_readme_exists():
    demo = _readme_commands()[2]
    assert (ROOT / demo.split("--config", 1)[1].strip()).is_file()
