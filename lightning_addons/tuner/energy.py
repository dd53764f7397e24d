"""Deprecated location of the energy meters: they live in :mod:`lightning_addons.energy` (a pure package
that a callback can import without the tuner). This module re-exports them unchanged."""

import warnings

from lightning_addons.energy.meters import (  # noqa: F401
    DEFAULT_WATTS_PER_CORE,
    RAPL_ROOT,
    CPUTimeMeter,
    EnergyMeterBase,
    NVMLMeter,
    RAPLMeter,
    WallClock,
    best_meter,
)

warnings.warn(
    "`lightning_addons.tuner.energy` moved: import the meters from `lightning_addons.energy`; the old module will "
    "be removed.",
    DeprecationWarning,
    stacklevel=2,
)
