"""HyperTuner: cross-layer multi-objective tuning of Lightning runs (MOPIR + ADUMBO on BoTorch).

Pure cores (:mod:`~lightning_addons.tuner.space`, :mod:`~lightning_addons.tuner.optimizers`, Pareto maths,
:mod:`~lightning_addons.tuner.mopir`) import no Lightning and no Optuna; the integrations (``HyperTuner``,
the Optuna ``HyperTunerSampler``, trial runners) load when first used. Names load lazily (PEP 562). The energy
meters moved to :mod:`lightning_addons.energy` (the old names here warn and still work).

Examples:
    >>> from lightning_addons.tuner import SearchSpace, ADUMBO
    >>> space = SearchSpace({"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}})
    >>> space.dim
    1
"""

from __future__ import annotations

from lightning_addons._lazy import lazy_exports

_EXPORTS = {
    "hypervolume": "lightning_addons.tuner._pareto",
    "pareto_mask": "lightning_addons.tuner._pareto",
    "Actuator": "lightning_addons.tuner.actuators",
    "CPUFrequencyActuator": "lightning_addons.tuner.actuators",
    "MOPIRResult": "lightning_addons.tuner.mopir",
    "mopir": "lightning_addons.tuner.mopir",
    "ADUMBO": "lightning_addons.tuner.optimizers",
    "QNEHVI": "lightning_addons.tuner.optimizers",
    "AskTellOptimizer": "lightning_addons.tuner.optimizers",
    "RandomSearch": "lightning_addons.tuner.optimizers",
    "SobolSearch": "lightning_addons.tuner.optimizers",
    "make_optimizer": "lightning_addons.tuner.optimizers",
    "LearningCurvePruner": "lightning_addons.tuner.pruners",
    "ParetoHalvingPruner": "lightning_addons.tuner.pruners",
    "TrialPruned": "lightning_addons.tuner.pruners",
    "write_report": "lightning_addons.tuner.report",
    "SYSTEM_PARAMETERS": "lightning_addons.tuner.space",
    "Param": "lightning_addons.tuner.space",
    "SearchSpace": "lightning_addons.tuner.space",
    "FunctionTrialRunner": "lightning_addons.tuner.trial",
    "LightningTrialRunner": "lightning_addons.tuner.trial",
    "Objective": "lightning_addons.tuner.trial",
    "HyperTuner": "lightning_addons.tuner.tuner",
    "TuningResult": "lightning_addons.tuner.tuner",
    "HyperTunerSampler": "lightning_addons.tuner.sampler",
}
__all__ = sorted(_EXPORTS)
#: The energy meters moved to lightning_addons.energy (a pure package); the old names warn and still work.
_MOVED = {n: f"lightning_addons.energy.{n}" for n in ("CPUTimeMeter", "NVMLMeter", "RAPLMeter", "best_meter")}
_lazy_getattr, __dir__ = lazy_exports(__name__, _EXPORTS, _MOVED)


def __getattr__(name: str):
    if name == "HyperTunerSampler":  # an Optuna sampler: name the extra when Optuna is missing
        from lightning_addons._imports import require

        require("optuna", feature="HyperTunerSampler")
    return _lazy_getattr(name)
