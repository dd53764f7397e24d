"""Availability flags for optional dependencies and a helper that names the extra to install."""

from __future__ import annotations

import importlib
import importlib.util
import warnings
from functools import cache
from types import ModuleType

#: import name -> (pip extra, distribution name) for every optional dependency we use.
OPTIONAL_MODULES: dict[str, tuple[str, str]] = {
    "open_clip": ("clip", "open_clip_torch"),
    "diffusers": ("clip", "diffusers"),
    "botorch": ("tune", "botorch"),
    "gpytorch": ("tune", "botorch"),
    "optuna": ("tune", "optuna"),
    "codecarbon": ("tune", "codecarbon"),
    "psycopg2": ("tune", "psycopg2-binary"),
    "flwr": ("fl", "flwr"),
    "flwr_datasets": ("fl", "flwr-datasets"),
    "tsl": ("tsl", "torch-spatiotemporal"),
    "torch_geometric": ("tsl", "torch_geometric"),
    "torch_scatter": ("tsl", "torch-scatter"),
    "torch_sparse": ("tsl", "torch-sparse"),
    "pytorch_lightning": ("tsl", "pytorch-lightning"),
    "torch_pruning": ("prune", "torch-pruning"),
}


#: Warnings an optional dependency emits on import about its *own* code, which our users cannot act on;
#: silenced narrowly (category + message) for that import only. linear_operator (via botorch) decorates
#: functions with ``torch.jit.script``, which torch >= 2.10 deprecates.
IMPORT_WARNINGS: dict[str, list[tuple[type[Warning], str]]] = {
    "botorch": [(FutureWarning, r"`torch\.jit\.script` is deprecated")],
    "gpytorch": [(FutureWarning, r"`torch\.jit\.script` is deprecated")],
}


@cache
def module_available(name: str) -> bool:
    """Whether ``name`` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def missing_extra_message(module: str, extra: str | None = None, feature: str | None = None) -> str:
    extra = extra or OPTIONAL_MODULES.get(module, ("all", module))[0]
    dist = OPTIONAL_MODULES.get(module, (extra, module))[1]
    what = f"{feature} needs" if feature else "This feature needs"
    return (
        f"{what} the optional dependency {dist!r} (import name {module!r}), which is not installed. "
        f"Install the extra: pip install 'lightning-addons[{extra}]'"
    )


def require(module: str, extra: str | None = None, feature: str | None = None) -> ModuleType:
    """Import an optional dependency or raise ``ModuleNotFoundError`` naming the extra to install.

    Examples:
        >>> require("torch").__name__
        'torch'
    """
    try:
        with warnings.catch_warnings():
            for category, message in IMPORT_WARNINGS.get(module.split(".")[0], ()):
                warnings.filterwarnings("ignore", message=message, category=category)
            return importlib.import_module(module)
    except ModuleNotFoundError as err:
        root = module.split(".")[0]
        if err.name is not None and err.name.split(".")[0] != root and module_available(root):
            raise  # a dependency *of* the optional package is broken: show the real error
        raise ModuleNotFoundError(missing_extra_message(root, extra, feature), name=root) from err


_CLIP_AVAILABLE = module_available("open_clip") and module_available("diffusers")
_TUNE_AVAILABLE = module_available("botorch") and module_available("optuna")
_FL_AVAILABLE = module_available("flwr")
_TSL_AVAILABLE = module_available("tsl")
_TORCH_PRUNING_AVAILABLE = module_available("torch_pruning")
