"""Energy meters (pure Python, no Lightning): NVIDIA NVML, Intel RAPL, CodeCarbon and a CPU-time estimate.

Used by the :class:`~lightning_addons.callbacks.EnergyMeter` callback and by the HyperTuner; the old
location :mod:`lightning_addons.tuner.energy` re-exports them.

Examples:
    >>> from lightning_addons.energy import CPUTimeMeter
    >>> CPUTimeMeter(watts_per_core=10.0).source
    'cpu-time-estimate'
"""

from __future__ import annotations

from lightning_addons._lazy import lazy_exports

_M = "lightning_addons.energy.meters"
_EXPORTS = {
    name: _M
    for name in (
        "DEFAULT_WATTS_PER_CORE",
        "ENERGY_SOURCES",
        "RAPL_ROOT",
        "CPUTimeMeter",
        "CodeCarbonMeter",
        "EnergyMeterBase",
        "NVMLMeter",
        "RAPLMeter",
        "WallClock",
        "best_meter",
    )
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
