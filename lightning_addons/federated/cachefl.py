"""Deprecated location of the CacheFL experiment driver: it moved to :mod:`lightning_addons.experiments.cachefl`.

Every name still resolves here, with a ``DeprecationWarning`` naming the new location.
"""

from __future__ import annotations

from lightning_addons._lazy import lazy_exports

_NEW = "lightning_addons.experiments.cachefl"
_MOVED = {
    name: f"{_NEW}.{name}"
    for name in (
        "FullEncoderClassifier",
        "METHOD_KEYS",
        "METHOD_NAMES",
        "METHODS",
        "TensorSplitsDataModule",
        "build_world",
        "client_datamodules",
        "format_table",
        "run_cachefl",
        "summarise",
    )
}
_MOVED["_clients"] = f"{_NEW}.client_datamodules"  # the old private name, used by earlier benchmarks
__all__: list[str] = []
__getattr__, __dir__ = lazy_exports(__name__, {}, moved=_MOVED)
