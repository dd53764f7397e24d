"""lightning-addons: PyTorch Lightning plugins for four research results.

Subpackages are imported lazily, so ``import lightning_addons`` pulls in no optional
dependency (open_clip, diffusers, botorch, optuna, flwr, tsl)::

    >>> import lightning_addons
    >>> lightning_addons.__version__
    '0.1.0'
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBPACKAGES = (
    "callbacks",
    "modules",
    "datamodules",
    "strategies",
    "tuner",
    "data",
    "cli",
    "zoo",
    "federated",
    "energy",
    "gmm",
    "resolve",
)

__all__ = ["__version__", *_SUBPACKAGES]


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
