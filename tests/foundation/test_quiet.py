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
