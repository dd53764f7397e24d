"""The base import stays light and every missing extra names itself."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lightning_addons._imports import OPTIONAL_MODULES, missing_extra_message, require

OPTIONAL = sorted(OPTIONAL_MODULES)
PUBLIC = [
    "lightning_addons",
    "lightning_addons.callbacks",
    "lightning_addons.modules",
    "lightning_addons.modules.nn",
    "lightning_addons.datamodules",
    "lightning_addons.strategies",
    "lightning_addons.tuner",
    "lightning_addons.cli",
]


def _imported_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_base_import_pulls_no_optional_dependency():
    loaded = _imported_after("import lightning_addons")
    assert not {m for m in loaded if m.split(".")[0] in OPTIONAL}
    assert "torch" not in loaded  # the root package is lazy


def test_public_subpackages_pull_no_optional_dependency():
    loaded = _imported_after(
        "; ".join(f"import {m}" for m in PUBLIC)
        + "; import lightning_addons.cli as c; c._import_public_classes()"
    )
    assert sorted({m.split(".")[0] for m in loaded} & set(OPTIONAL)) == []


def test_lazy_subpackage_access():
    import lightning_addons

    assert lightning_addons.datamodules.DigitsDataModule.__name__ == "DigitsDataModule"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        lightning_addons.nope  # noqa: B018


@pytest.mark.parametrize("module", OPTIONAL)
def test_missing_extra_message_names_the_extra(module):
    extra, dist = OPTIONAL_MODULES[module]
    msg = missing_extra_message(module, feature="X")
    assert f"lightning-addons[{extra}]" in msg and dist in msg and msg.startswith("X needs")


@pytest.mark.parametrize("module", OPTIONAL)
def test_require_raises_naming_the_extra_when_the_module_is_missing(module, monkeypatch):
    extra = OPTIONAL_MODULES[module][0]
    # Hide the module (installed or not) so the import fails the way it does without the extra.
    for name in list(sys.modules):
        if name == module or name.startswith(module + "."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ModuleNotFoundError, match=rf"pip install 'lightning-addons\[{extra}\]'"):
        require(module, feature="Some feature")


def test_require_returns_installed_module():
    assert require("torch").__name__ == "torch"
