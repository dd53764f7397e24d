"""Every docstring example in the package runs and prints what it claims (doctest)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import lightning_addons

MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(lightning_addons.__path__, prefix="lightning_addons.")
    if m.name != "lightning_addons.__main__"
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    module = importlib.import_module(name)
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples failed in {name}"
