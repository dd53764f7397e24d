"""Quiet by default: upstream warnings our users cannot act on are silenced narrowly, at their source."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["botorch", "gpytorch"])
def test_optional_import_through_require_emits_no_upstream_torch_jit_warning(module):
    code = (
        "import warnings; warnings.simplefilter('error');"
        "from lightning_addons._imports import require;"
        f"require({module!r});"
        "warnings.warn('still on', FutureWarning)"  # the filter is local: later warnings still raise
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr
    assert "FutureWarning: still on" in out.stderr and "torch.jit.script" not in out.stderr


def test_fit_from_the_cli_prints_no_lightning_tip_and_no_upstream_deprecation(tmp_path):
    from pathlib import Path

    config = Path(__file__).resolve().parents[2] / "examples" / "configs" / "digits_lenet.yaml"
    out = subprocess.run(
        [sys.executable, "-m", "lightning_addons.cli", "fit", "--config", str(config),
         "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
         "--trainer.limit_test_batches", "1", "--trainer.default_root_dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    assert "test_acc" in text  # the run itself still reports
    assert "Tip:" not in text and "LeafSpec" not in text and "DeprecationWarning" not in text
