"""HyperTuner: cross-layer multi-objective tuning of Lightning runs on an Optuna study."""

from __future__ import annotations

import math
import os
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lightning_addons._imports import require
from lightning_addons.energy.meters import DEFAULT_WATTS_PER_CORE
from lightning_addons.tuner._pareto import log_columns, pareto_mask, to_max
from lightning_addons.tuner.actuators import Actuator
from lightning_addons.tuner.mopir import MOPIRResult
from lightning_addons.tuner.optimizers import ALGORITHMS
from lightning_addons.tuner.space import SYSTEM_PARAMETERS, SearchSpace
from lightning_addons.tuner.trial import (
    BUILTIN_OBJECTIVES,
    FunctionTrialRunner,
    LightningTrialRunner,
    Objective,
    TrialRunner,
    class_config,
    parse_objectives,
)

OPTUNA_ALGORITHMS = ("tpe", "nsga2", "gp", "optuna_random")
#: System knobs applied through the trial's config (the others are applied inside the trial process).
_CONFIG_TARGETS = {
    "precision": "trainer.precision",
    "batch_size": "data.init_args.batch_size",
    "num_workers": "data.init_args.num_workers",
    "accumulate_grad_batches": "trainer.accumulate_grad_batches",
    "devices": "trainer.devices",
    "strategy": "trainer.strategy",
}


@dataclass
class TuningResult:
    """What :meth:`HyperTuner.run` returns.

    Attributes:
        history: one dict per trial (number, state, params, objective values, energy source, error).
        pareto: the non-dominated complete trials (same dicts).
        mopir: the MOPIR ranking (None if disabled or too few trials).
        objectives: the objectives.
        study: the Optuna study.
    """

    history: list[dict[str, Any]]
    pareto: list[dict[str, Any]]
    mopir: MOPIRResult | None
    objectives: list[Objective]
    study: Any = field(repr=False, default=None)

    def dataframe(self):
        import pandas as pd

        rows = []
        for h in self.history:
            row = {"number": h["number"], "state": h["state"]}
            row.update({f"param_{k}": v for k, v in h["params"].items()})
            row.update({o.name: h["values"].get(o.name) for o in self.objectives})
            row.update(
                energy_source=h.get("energy_source"), pareto=h.get("pareto", False), error=h.get("error")
            )
            rows.append(row)
        return pd.DataFrame(rows)


class HyperTuner:
    """Tune model and system parameters of a Lightning run for several objectives at once.

    Each trial builds a fresh ``Trainer`` in a fresh subprocess, applies the trial's system knobs
    (precision, batch size, ``num_workers``, torch (interop) threads, ``accumulate_grad_batches``,
    ``devices``/``strategy``, ``torch.compile``, matmul precision) before training, fits, and records the
    objectives: any logged metric, ``time`` (fit wall seconds) and ``energy`` (joules, with its meter's
    source). Trials live in an Optuna study (SQLite file by default; PostgreSQL/MySQL URLs for many
    workers); suggestions come from :class:`~lightning_addons.tuner.sampler.HyperTunerSampler`
    (ADUMBO + MOPIR) or one of Optuna's samplers. Failed trials (exception, OOM, NaN loss, timeout) are
    recorded as ``FAIL`` and the study goes on; a killed run resumes from the storage.

    Args:
        space: a :class:`SearchSpace` or its YAML mapping.
        objectives: e.g. ``["val_acc:max", "time:min", "energy:min"]`` or dicts ``{name, direction}``.
        model: LightningModule class or ``{class_path, init_args}``; with ``model_args`` for a class.
        data: LightningDataModule class or ``{class_path, init_args}``; with ``data_args``.
        trainer: ``Trainer`` keyword arguments (YAML form; callbacks as ``{class_path, init_args}``).
        trial_fn: instead of model/data, a function ``params -> {metric: value}`` run in-process.
        algorithm: ``adumbo`` (default), ``adumbo_w1``, ``adumbo_w0``, ``random``, ``sobol``, ``qnehvi``,
            or Optuna's ``tpe``, ``nsga2``, ``gp``, ``optuna_random``.
        n_trials: total finished trials wanted in the study (shared by all workers; a resumed study counts
            the trials it already has).
        n_init: initial design size (default ``min(10, max(2, n_trials // 3))``).
        seed: random seed (also ``seed_everything`` of each trial unless the config sets one).
        storage: Optuna storage URL; default ``sqlite:///<output_dir>/study.db``.
        study_name: study name in the storage.
        output_dir: reports, trial logs and the default SQLite file.
        mopir: True (defaults), False, or a dict of options (``share``, ``k_min``, ``top_k``, ``method``,
            ``weights``, ``freeze``).
        timeout: seconds per trial (Lightning trials), None for no limit.
        watts_per_core: power of one busy core for the CPU-time energy estimate.
        actuators: root-only :class:`Actuator` objects for knobs outside the process (off by default).
        progress: show a progress bar with the current best per objective.
        heartbeat_interval: seconds between heartbeats of a running trial; a trial silent for twice this is
            failed by the next worker (a killed run's last trial).
        optimizer_kwargs: extra options of the ask/tell optimiser (``tau``, ``w0``, ``beta``, ...).

    Raises:
        ValueError: bad space/objectives/algorithm/n_trials, an unknown system parameter, ``devices``
            tuned on a machine with one device, neither ``model`` nor ``trial_fn`` given.
        ModuleNotFoundError: Optuna/BoTorch missing (names the extra ``tune``), at :meth:`run`.

    Example:
        >>> tuner = HyperTuner(
        ...     space={"x": {"type": "float", "low": 0.0, "high": 1.0}},
        ...     objectives=["f1:min", "f2:min"],
        ...     trial_fn=lambda p: {"f1": p["x"], "f2": (1 - p["x"]) ** 2},
        ...     algorithm="sobol", n_trials=4, storage="sqlite:///:memory:", progress=False, mopir=False)
        >>> len(tuner.run().history)
        4
    """

    def __init__(
        self,
        space: SearchSpace | Mapping[str, Mapping[str, Any]],
        objectives: Sequence[Any],
        model: Any = None,
        data: Any = None,
        trainer: Mapping[str, Any] | None = None,
        model_args: Mapping[str, Any] | None = None,
        data_args: Mapping[str, Any] | None = None,
        trial_fn: Callable[[dict[str, Any]], Mapping[str, float]] | None = None,
        algorithm: str = "adumbo",
        n_trials: int = 20,
        n_init: int | None = None,
        seed: int = 0,
        storage: str | None = None,
        study_name: str = "hypertuner",
        output_dir: str | os.PathLike = "runs/hypertuner",
        mopir: bool | Mapping[str, Any] = True,
        timeout: float | None = None,
        watts_per_core: float = DEFAULT_WATTS_PER_CORE,
        actuators: Sequence[Actuator] | None = None,
        progress: bool = True,
        heartbeat_interval: int = 10,
        optimizer_kwargs: Mapping[str, Any] | None = None,
        seed_everything: int | None = None,
    ) -> None:
        self.actuators = list(actuators or [])
        extra = [n for a in self.actuators for n in a.parameters]
        if isinstance(space, SearchSpace):
            space = SearchSpace(space.params, extra_system=extra)  # re-validate with the actuators' names
        self.space = space if isinstance(space, SearchSpace) else SearchSpace(space, extra_system=extra)
        self.objectives = parse_objectives(objectives)
        algos = (*ALGORITHMS, "adumbo_w1", "adumbo_w0", *OPTUNA_ALGORITHMS)
        if algorithm not in algos:
            raise ValueError(f"`algorithm` must be one of {list(algos)}, got {algorithm!r}.")
        if not isinstance(n_trials, int) or n_trials < 1:
            raise ValueError(f"`n_trials` must be an integer >= 1, got {n_trials!r}.")
        if n_init is not None and (not isinstance(n_init, int) or n_init < 1):
            raise ValueError(f"`n_init` must be an integer >= 1 or None, got {n_init!r}.")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"`timeout` must be > 0 seconds or None, got {timeout!r}.")
        if (model is None) == (trial_fn is None):
            raise ValueError(
                "give exactly one of `model` (a LightningModule class or {class_path, init_args}) "
                f"or `trial_fn` (a function); got model={model!r}, trial_fn={trial_fn!r}."
            )
        self.algorithm = algorithm
        self.n_trials = n_trials
        self.n_init = n_init if n_init is not None else min(10, max(2, n_trials // 3))
        self.seed = int(seed)
        self.output_dir = Path(output_dir)
        self.storage = storage or f"sqlite:///{(self.output_dir / 'study.db').as_posix()}"
        self.study_name = study_name
        if mopir is True:
            mopir = {}
        self.mopir_options = None if mopir is False or mopir is None else dict(mopir)
        self.timeout = timeout
        self.watts_per_core = watts_per_core
        self.progress = progress
        self.heartbeat_interval = int(heartbeat_interval)
        self.optimizer_kwargs = dict(optimizer_kwargs or {})
        self._check_devices()
        if trial_fn is not None:
            self.runner: TrialRunner = FunctionTrialRunner(trial_fn, watts_per_core)
        else:
            config = {
                "seed_everything": self.seed if seed_everything is None else seed_everything,
                "model": class_config(model, model_args),
                "data": class_config(data, data_args),
                "trainer": dict(trainer or {}),
            }
            targets = {}
            for p in self.space.params:
                if p.target:
                    targets[p.name] = p.target
                elif p.layer == "system" and p.name in _CONFIG_TARGETS:
                    targets[p.name] = _CONFIG_TARGETS[p.name]
                elif p.layer == "model":
                    targets[p.name] = f"model.init_args.{p.name}"
            sysnames = [
                p.name for p in self.space.params if p.layer == "system" and p.name in SYSTEM_PARAMETERS
            ]
            self.runner = LightningTrialRunner(
                config,
                targets,
                sysnames,
                timeout=timeout,
                watts_per_core=watts_per_core,
                workdir=self.output_dir / "trials",
            )
        self._checked_names = False

    # ----------------------------------------------------------------------------- checks
    def _check_devices(self) -> None:
        for name in ("devices", "strategy"):
            if name in self.space.names:
                import torch

                n = torch.cuda.device_count()
                if n < 2:
                    raise ValueError(
                        f"system parameter {name!r} is tuned only where more than one device exists; this machine "
                        f"has {n} CUDA device(s). Remove {name!r} from the space."
                    )

    def _check_logged(self, result: Mapping[str, Any]) -> None:
        logged = sorted(result.get("metrics", {}))
        missing = [
            o.name for o in self.objectives if o.name not in BUILTIN_OBJECTIVES and o.name not in logged
        ]
        if missing:
            raise ValueError(
                f"objective(s) {missing} were never logged by the first finished trial; logged names: {logged} "
                f"(built-in: {sorted(BUILTIN_OBJECTIVES)}). Fix `objectives` or log the metric with self.log()."
            )

    # ----------------------------------------------------------------------------- study
    def create_study(self):
        """Create or load the Optuna study (``load_if_exists``)."""
        optuna = require("optuna", feature="HyperTuner")
        require("botorch", feature="HyperTuner")
        if self.storage.startswith("sqlite:///") and ":memory:" not in self.storage:
            Path(self.storage[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        if "://" in self.storage:
            storage = optuna.storages.RDBStorage(
                self.storage,
                heartbeat_interval=self.heartbeat_interval,
                grace_period=2 * self.heartbeat_interval,
            )
        else:
            storage = self.storage
        directions = [o.direction for o in self.objectives]
        study = optuna.create_study(
            storage=storage,
            study_name=self.study_name,
            directions=directions,
            sampler=self._make_sampler(),
            load_if_exists=True,
        )
        if [d.name.lower() for d in study.directions] != directions:
            raise ValueError(
                f"study {self.study_name!r} in the storage has directions "
                f"{[d.name.lower() for d in study.directions]}, the objectives need {directions}."
            )
        study.set_metric_names([o.name for o in self.objectives])
        stored = study.user_attrs.get("hypertuner_space")
        if stored is None:
            study.set_user_attr("hypertuner_space", self.space.to_dict())
        elif stored != self.space.to_dict():
            raise ValueError(
                f"study {self.study_name!r} was created with another search space: {stored}; "
                f"use a new `study_name` or the same space."
            )
        return study

    def _make_sampler(self):
        from lightning_addons.tuner.sampler import HyperTunerSampler, optuna_sampler

        if self.algorithm in OPTUNA_ALGORITHMS:
            return optuna_sampler(self.algorithm, seed=self.seed, n_init=self.n_init)
        return HyperTunerSampler(
            self.space,
            [o.direction for o in self.objectives],
            algorithm=self.algorithm,
            seed=self.seed,
            n_init=self.n_init,
            log_objectives=[i for i, o in enumerate(self.objectives) if o.log_scale],
            mopir=self.mopir_options,
            optimizer_kwargs=self.optimizer_kwargs,
            objective_names=[o.name for o in self.objectives],
        )

    # ----------------------------------------------------------------------------- run
    def run(self) -> TuningResult:
        """Run trials until the study holds ``n_trials`` finished ones; returns the :class:`TuningResult`."""
        optuna = require("optuna", feature="HyperTuner")
        verbosity = optuna.logging.get_verbosity()
        # scoped to this run: the caller's warning filters and Optuna's verbosity are restored afterwards
        with warnings.catch_warnings():
            # we record heartbeats ourselves (ask/tell); Optuna warns that heartbeats are meant for optimize()
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            try:
                return self._run()
            finally:
                optuna.logging.set_verbosity(verbosity)

    def _run(self) -> TuningResult:
        from optuna.storages import fail_stale_trials
        from optuna.trial import TrialState

        self.output_dir.mkdir(parents=True, exist_ok=True)
        study = self.create_study()
        finished = (TrialState.COMPLETE, TrialState.FAIL)
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            n_done = len(study.get_trials(deepcopy=False, states=finished))
            bar = tqdm(
                total=self.n_trials, initial=min(n_done, self.n_trials), desc="HyperTuner", unit="trial"
            )
        try:
            while True:
                if "://" in self.storage:
                    fail_stale_trials(study)
                states = (*finished, TrialState.RUNNING)
                if len(study.get_trials(deepcopy=False, states=states)) >= self.n_trials:
                    break
                trial = study.ask()
                params = {p.name: self._suggest(trial, p) for p in self.space.params}
                record = self._run_trial(study, trial, params)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix_str(self._best_str(study))
                if record.get("fatal"):
                    raise record["fatal"]
        finally:
            if bar is not None:
                bar.close()
        return self.result(study)

    @staticmethod
    def _suggest(trial, p):
        if p.type == "categorical":
            return trial.suggest_categorical(p.name, p.choices)
        if p.type == "int":
            return trial.suggest_int(p.name, p.low, p.high, log=p.log)
        return trial.suggest_float(p.name, p.low, p.high, log=p.log)

    def _run_trial(self, study, trial, params) -> dict[str, Any]:
        from optuna.trial import TrialState

        stop = threading.Event()
        hb = None
        storage = study._storage
        if hasattr(storage, "record_heartbeat") and storage.get_heartbeat_interval():

            def beat():
                while not stop.wait(self.heartbeat_interval):
                    try:
                        storage.record_heartbeat(trial._trial_id)
                    except Exception:  # noqa: BLE001 - a missed beat is not fatal
                        pass

            storage.record_heartbeat(trial._trial_id)
            hb = threading.Thread(target=beat, daemon=True)
            hb.start()
        applied = []
        try:
            for act in self.actuators:
                vals = {k: v for k, v in params.items() if k in act.parameters}
                if vals:
                    act.apply(vals)
                    applied.append(act)
            result = self.runner(params, trial.number)
        finally:
            for act in applied:
                act.restore()
            stop.set()
            if hb is not None:
                hb.join(timeout=1)
        trial.set_user_attr("energy_source", result.get("energy_source"))
        trial.set_user_attr("metrics", result.get("metrics", {}))
        if "applied" in result:
            trial.set_user_attr("applied", result["applied"])
        fatal = None
        if result.get("status") == "ok":
            if not self._checked_names:
                try:
                    self._check_logged(result)
                except ValueError as err:
                    trial.set_user_attr("error", str(err))
                    study.tell(trial, state=TrialState.FAIL)
                    return {"fatal": err}
                self._checked_names = True
            values = []
            for o in self.objectives:
                v = (
                    {"time": result.get("time"), "energy": result.get("energy")}.get(o.name)
                    if o.name in BUILTIN_OBJECTIVES
                    else result["metrics"].get(o.name)
                )
                values.append(float("nan") if v is None else float(v))
            if all(math.isfinite(v) for v in values):
                study.tell(trial, values)
                return {"state": "COMPLETE"}
            result["error"] = (
                f"non-finite objective values {dict(zip([o.name for o in self.objectives], values))}"
            )
        trial.set_user_attr("error", str(result.get("error", "unknown failure"))[:2000])
        study.tell(trial, state=TrialState.FAIL)
        return {"state": "FAIL", "fatal": fatal}

    def _best_str(self, study) -> str:
        from optuna.trial import TrialState

        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not done:
            return "no finished trial yet"
        parts = []
        for i, o in enumerate(self.objectives):
            vals = [t.values[i] for t in done]
            best = max(vals) if o.direction == "maximize" else min(vals)
            parts.append(f"{o.name}={best:.4g}")
        return "best " + " ".join(parts)

    # ----------------------------------------------------------------------------- results
    def result(self, study=None) -> TuningResult:
        """Collect history, Pareto set and MOPIR ranking from the study."""
        from optuna.trial import TrialState

        from lightning_addons.tuner.mopir import mopir as run_mopir
        from lightning_addons.tuner.sampler import MOPIR_ATTR

        study = study or self.create_study()
        history = []
        for t in study.get_trials(deepcopy=False):
            if t.state not in (TrialState.COMPLETE, TrialState.FAIL):
                continue
            values = {o.name: (t.values[i] if t.values else None) for i, o in enumerate(self.objectives)}
            history.append(
                {
                    "number": t.number,
                    "state": t.state.name,
                    "params": dict(t.params),
                    "values": values,
                    "energy_source": t.user_attrs.get("energy_source"),
                    "error": t.user_attrs.get("error"),
                    "metrics": t.user_attrs.get("metrics", {}),
                    "applied": t.user_attrs.get("applied"),
                }
            )
        complete = [h for h in history if h["state"] == "COMPLETE"]
        if complete:
            Y = np.array([[h["values"][o.name] for o in self.objectives] for h in complete])
            mask = pareto_mask(to_max(Y, [o.direction for o in self.objectives]))
            for h, m in zip(complete, mask):
                h["pareto"] = bool(m)
        pareto = [h for h in complete if h.get("pareto")]
        ranking = None
        stored = study.user_attrs.get(MOPIR_ATTR)
        if stored:
            ranking = MOPIRResult.from_dict(stored)
        elif self.mopir_options is not None and len(complete) >= 3:
            X = np.array(
                [
                    self.space.to_unit(h["params"])
                    for h in complete
                    if all(n in h["params"] for n in self.space.names)
                ]
            )
            if len(X) == len(complete):
                Y = np.array([[h["values"][o.name] for o in self.objectives] for h in complete], float)
                Y = log_columns(Y, [i for i, o in enumerate(self.objectives) if o.log_scale], floor=1e-12)
                opts = {k: v for k, v in self.mopir_options.items() if k != "freeze"}
                try:
                    ranking = run_mopir(
                        X, Y, self.space.names, [o.name for o in self.objectives], seed=self.seed, **opts
                    )
                except ValueError:
                    ranking = None
        return TuningResult(
            history=history, pareto=pareto, mopir=ranking, objectives=self.objectives, study=study
        )
