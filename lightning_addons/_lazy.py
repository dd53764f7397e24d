"""PEP 562 lazy re-exports for package ``__init__`` files.

A package lists ``name -> submodule`` and gets a module-level ``__getattr__``/``__dir__`` that import the
submodule on first access, so importing a package (for example on the way to one of its pure-torch
submodules) loads none of its siblings. Names that moved to another package keep working through
``moved``: the first access warns with the new location (``DeprecationWarning``).

Examples:
    >>> import sys, types
    >>> sys.modules["pkg"] = types.ModuleType("pkg")
    >>> getattr_, dir_ = lazy_exports("pkg", {"sqrt": "math"}, moved={"old_pi": "math.pi"})
    >>> getattr_("sqrt")(4.0)
    2.0
    >>> sorted(dir_())
    ['old_pi', 'sqrt']
    >>> del sys.modules["pkg"]
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, str], moved: Mapping[str, str] | None = None
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``.

    Args:
        package: the package's ``__name__``.
        exports: public name -> absolute module that defines it (imported on first access).
        moved: old public name -> ``"new.module.Name"``; access warns (``DeprecationWarning``) and returns it.
    """
    exports = dict(exports)
    moved = dict(moved or {})
    # A name that is also its submodule's name (``federated.partition``, ``tuner.mopir``) would be shadowed by
    # the submodule once anything imports it: import those now and bind the exported object over the module.
    for name, module in exports.items():
        if module == f"{package}.{name}":
            setattr(sys.modules[package], name, getattr(importlib.import_module(module), name))

    def __getattr__(name: str) -> Any:
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        if name in moved:
            module, _, attr = moved[name].rpartition(".")
            warnings.warn(
                f"`{package}.{name}` moved: import it from `{module}` "
                f"(`from {module} import {attr}`); the old location will be removed.",
                DeprecationWarning,
                stacklevel=2,
            )
            return getattr(importlib.import_module(module), attr)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted({*exports, *moved})

    return __getattr__, __dir__
