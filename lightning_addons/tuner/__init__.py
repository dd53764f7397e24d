"""HyperTuner: cross-layer multi-objective tuning of Lightning runs (MOPIR + ADUMBO on BoTorch).

Importing this package needs no optional dependency; BoTorch and Optuna (extra ``tune``) are imported
when an optimiser step or a study needs them. ``HyperTunerSampler`` (an Optuna sampler) is loaded lazily.

Example:
    >>> from lightning_addons.tuner import SearchSpace, ADUMBO
    >>> space = SearchSpace({"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}})
    >>> space.dim
    1
"""

from __future__ import annotations

from typing import Any

from lightning_addons.cli import register_command
from lightning_addons.tuner._pareto import hypervolume, pareto_mask
from lightning_addons.tuner.actuators import Actuator, CPUFrequencyActuator
from lightning_addons.tuner.energy import CPUTimeMeter, NVMLMeter, RAPLMeter, best_meter
from lightning_addons.tuner.mopir import MOPIRResult, mopir
from lightning_addons.tuner.optimizers import (
    ADUMBO,
    QNEHVI,
    AskTellOptimizer,
    RandomSearch,
    SobolSearch,
    make_optimizer,
)
from lightning_addons.tuner.report import write_report
from lightning_addons.tuner.space import SYSTEM_PARAMETERS, Param, SearchSpace
from lightning_addons.tuner.trial import FunctionTrialRunner, LightningTrialRunner, Objective
from lightning_addons.tuner.tuner import HyperTuner, TuningResult

register_command("tune", "lightning_addons.tuner.cli:main")

__all__ = [
    "ADUMBO",
    "QNEHVI",
    "SYSTEM_PARAMETERS",
    "Actuator",
    "AskTellOptimizer",
    "CPUFrequencyActuator",
    "CPUTimeMeter",
    "FunctionTrialRunner",
    "HyperTuner",
    "HyperTunerSampler",
    "LightningTrialRunner",
    "MOPIRResult",
    "NVMLMeter",
    "Objective",
    "Param",
    "RAPLMeter",
    "RandomSearch",
    "SearchSpace",
    "SobolSearch",
    "TuningResult",
    "best_meter",
    "hypervolume",
    "make_optimizer",
    "mopir",
    "pareto_mask",
    "write_report",
]


def __getattr__(name: str) -> Any:
    if name == "HyperTunerSampler":
        from lightning_addons._imports import require

        require("optuna", feature="HyperTunerSampler")
        from lightning_addons.tuner.sampler import HyperTunerSampler

        return HyperTunerSampler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
